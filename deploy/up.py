"""The process supervisor behind ``make up``: the devnet in this process, and the indexer,
one CPU worker and the gateway as child processes, each logging with its name. Ctrl-C (or any
child dying) stops everything cleanly, Anvil last."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec

from rich.console import Console
from rich.text import Text

from contracts.manifest import data_dir
from deploy.devnet import bring_up, stop_on_signals

log = logging.getLogger(__name__)
console = Console()


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    proc: subprocess.Popen[str] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            list(self.argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            console.print(Text.assemble((f"{self.name:>8}", "cyan"), " | ", line.rstrip()), soft_wrap=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def services(gateway_port: int) -> list[Child]:
    py = sys.executable
    children = []
    if find_spec("indexer.cli"):
        children.append(Child("indexer", [py, "-m", "indexer", "run"]))
    if find_spec("worker.cli"):
        children.append(Child("worker", [py, "-m", "worker", "run", "--devnet-role", "provider"]))
    if find_spec("gateway.cli"):
        children.append(Child("gateway", [py, "-m", "gateway", "run", "--port", str(gateway_port)]))
    return children


def run_stack(port: int, chain_id: int, block_time: float | None, gateway_port: int) -> None:
    stop_on_signals()
    with console.status("starting Anvil, compiling, deploying, funding and staking..."):
        dn = bring_up(port=port, chain_id=chain_id, block_time=block_time, anvil_log=data_dir() / "anvil.log")
    console.print(f"[green]devnet up[/] at {dn.anvil.rpc_url} (chain id {chain_id}); manifest in {data_dir()}")
    for name, c in dn.manifest.contracts.items():
        console.print(f"  {name:<14} {c.address}")
    env = {**os.environ, "HEARTH_DATA_DIR": str(data_dir()), "PYTHONUNBUFFERED": "1"}
    children = services(gateway_port)
    try:
        for child in children:
            child.start(env)
            console.print(f"started {child.name} (pid {child.proc.pid if child.proc else '?'})")
        if any(c.name == "gateway" for c in children):
            console.print(f"[green]gateway[/] at http://127.0.0.1:{gateway_port}/ (dashboard), /docs (API)")
        console.print("Ctrl-C stops everything.")
        while dn.anvil.proc and dn.anvil.proc.poll() is None:
            dead = [c for c in children if not c.alive()]
            if dead:
                code = dead[0].proc.returncode if dead[0].proc else "?"
                console.print(f"[red]{dead[0].name} exited with {code}; stopping[/]")
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        for child in reversed(children):
            child.stop()
        dn.anvil.stop()
        console.print("stopped.")
