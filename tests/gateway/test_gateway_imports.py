"""The gateway stays light: importing it loads no torch (the billing tokenizer and the job
formats come from the protocol layer, not from the worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_gateway_app_does_not_import_torch_or_the_worker() -> None:
    code = ("import gateway.app, sys; "
            "print('torch' in sys.modules, any(m == 'worker' or m.startswith('worker.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["False", "False"], out.stderr
