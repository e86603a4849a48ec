"""Compiled Triton kernels on a real GPU (skipped without CUDA).

The rest of this folder runs Triton interpreted (`TRITON_INTERPRET=1` from conftest), so these
checks run in a subprocess with the interpreter off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

_SCRIPT = textwrap.dedent(
    """
    import random, sys
    import numpy as np
    from worker.model import Encoder
    from tests.worker_model.sentences import SENTENCES

    texts = (SENTENCES * 2)[:64]
    ref = Encoder(backend="torch", dtype="fp32", device="cuda").encode(texts)
    floors = {"fp32": 0.99999, "fp16": 0.999, "bf16": 0.995}
    for dtype in ("fp32", "fp16", "bf16"):
        enc = Encoder(backend="triton", dtype=dtype, device="cuda")
        full = enc.encode(texts)
        cos = float((full * ref).sum(axis=1).min())
        assert cos >= floors[dtype], (dtype, cos)
        alone = [enc.encode([t])[0].tobytes() for t in texts]
        rng = random.Random(0)
        for size in (2, 3, 8, 17, 32, 64):
            idx = rng.sample(range(len(texts)), size)
            out = enc.encode([texts[i] for i in idx])
            for row, i in enumerate(idx):
                assert out[row].tobytes() == alone[i], (dtype, size, i)
        print(dtype, "min cosine", cos, "invariant")
    """
)


def test_compiled_triton_kernels_are_batch_invariant_and_accurate_on_gpu() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
