"""The process supervisor behind ``make up``: the devnet in this process, and as child
processes, each logging with its name: the indexer, one CPU worker node (the per-job path), the
gateway, two serving-plane provider endpoints (``python -m worker.serving``, regions ``eu-west``
and ``us-east`` at different quoted prices, each serving MiniLM and SmolLM2, see
:data:`deploy.devnet.SERVING_PROVIDERS`) and, when the module is installed, the batch verifier
(``python -m worker.serving.verifier``).

Readiness. The services start at once; a provider answers ``/healthz`` only once its models are
loaded (SmolLM2 takes 10-20 s). The supervisor polls the gateway's and each provider's
``/healthz`` and prints one ``stack ready`` line when all answer (or a warning naming those that
do not after :data:`READY_TIMEOUT_S`), so a client knows when requests will be served.

Stopping. SIGINT (Ctrl-C), SIGTERM and SIGHUP all stop the stack, and this holds when the
supervisor was started with SIGINT ignored (``nohup``, a shell script's background job, a
service manager): the handlers are installed explicitly, overriding an inherited ``SIG_IGN``.
Children run in their own process groups and are stopped with SIGTERM, which each service
handles as a clean stop (finish the current step, close connections), all at once; whatever is
still running after ``stop_timeout`` seconds gets SIGKILL. Anvil stops last.

A child that dies stops the stack with its exit code, unless restarts are on
(``--restart`` / ``HEARTH_UP_RESTART=1``): then it is started again after a backoff that doubles
from ``restart_backoff`` up to ``restart_backoff_max`` seconds, and resets once the service has
stayed up for a minute.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.text import Text

from deploy.devnet import LLM_NAME, MINILM_NAME, ServingProvider, bring_up, deployment_lines
from deploy.settings import CliSettings

log = logging.getLogger(__name__)
#: A log, not a screen: long lines (paths, URLs) are never wrapped, whatever the terminal width.
console = Console(soft_wrap=True)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: A service that stayed up this long is healthy again: its restart backoff starts over.
HEALTHY_AFTER_S = 60.0


class StopRequested(BaseException):
    """Raised in the main thread by SIGINT, SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


def install_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise :class:`StopRequested` in the main thread (explicitly, so an
    inherited ``SIG_IGN`` for SIGINT does not make the stack unstoppable by it)."""

    def _raise(signum: int, _frame: FrameType | None) -> None:
        raise StopRequested(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise)


def ignore_stop_signals() -> None:
    """While stopping: a second signal must not abort the clean-up half way."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    proc: subprocess.Popen[str] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_backoff: float = 0.0

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            list(self.argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # Its own process group: a terminal's Ctrl-C reaches only the supervisor, which stops the
            # children in order. (The supervisor handles SIGINT itself, so exec gives the child the
            # default SIGINT action even when the supervisor was started with SIGINT ignored.)
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True, name=f"pump-{self.name}").start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout
        for line in proc.stdout:
            console.print(Text.assemble((f"{self.name:>8}", "cyan"), " | ", line.rstrip()))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def terminate(self) -> None:
        """SIGTERM to the child's process group (the service and anything it spawned)."""
        if self.alive():
            assert self.proc
            _signal_group(self.proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop_children(children: Sequence[Child], timeout: float) -> dict[str, str]:
    """SIGTERM to every live child at once, then SIGKILL to those still running after
    ``timeout`` seconds. Returns how each one ended: ``exit N``, ``terminated`` (by the SIGTERM)
    or ``killed`` (SIGKILL after the timeout)."""
    for c in children:
        c.terminate()
    deadline = time.monotonic() + timeout
    for c in children:
        if c.proc is None:
            continue
        try:
            c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs of SIGTERM: SIGKILL", c.name, timeout)
            console.print(f"[red]{c.name} did not stop within {timeout:.0f}s: killing it[/]")
            c.kill()
    # Whatever a service spawned in its group and left behind goes too.
    for c in children:
        if c.proc is not None:
            _signal_group(c.proc.pid, signal.SIGKILL)
    return {c.name: _how(c.returncode) for c in children if c.proc is not None}


def _how(code: int | None) -> str:
    if code == -signal.SIGKILL:
        return "killed"
    if code == -signal.SIGTERM:  # uvicorn re-raises SIGTERM after its clean shutdown
        return "terminated"
    return f"exit {code}"


@dataclass
class Supervisor:
    """Starts the children, watches them, restarts (with backoff) or stops them."""

    children: list[Child]
    env: dict[str, str]
    restart: bool = False
    restart_backoff: float = 1.0
    restart_backoff_max: float = 30.0
    stop_timeout: float = 10.0
    poll_s: float = 0.2
    #: what else must stay alive (Anvil); returns False when it died
    also_alive: Callable[[], bool] = field(default=lambda: True)

    def start(self) -> None:
        for c in self.children:
            c.start(self.env)
            console.print(f"started {c.name} (pid {c.proc.pid if c.proc else '?'})")

    def watch(self) -> str:
        """Until a signal, Anvil's death or (without restarts) a child's death; returns why it stopped."""
        pending: dict[str, float] = {}  # child name -> monotonic time of its restart
        while True:
            if not self.also_alive():
                return "anvil exited"
            now = time.monotonic()
            for c in self.children:
                if c.alive() or c.proc is None:
                    continue
                if c.name in pending:
                    if now >= pending[c.name]:
                        del pending[c.name]
                        c.restarts += 1
                        c.start(self.env)
                        console.print(f"restarted {c.name} (pid {c.proc.pid if c.proc else '?'}, "
                                      f"restart {c.restarts})")
                    continue
                code = c.returncode
                if not self.restart:
                    console.print(f"[red]{c.name} exited with {code}; stopping[/]")
                    return f"{c.name} exited with {code}"
                if now - c.started_at >= HEALTHY_AFTER_S:
                    c.next_backoff = 0.0
                c.next_backoff = min(self.restart_backoff_max, c.next_backoff * 2 or self.restart_backoff)
                pending[c.name] = now + c.next_backoff
                console.print(f"[yellow]{c.name} exited with {code}; restarting in {c.next_backoff:.1f}s[/]")
            time.sleep(self.poll_s)

    def stop(self) -> dict[str, str]:
        return stop_children(list(reversed(self.children)), self.stop_timeout)


#: The batch verifier's module and the devnet role whose key it verifies with. Another part of
#: the serving plane: the supervisor runs it only where the module is installed.
VERIFIER_MODULE = "worker.serving.verifier"
VERIFIER_ROLE = "verifier"


def verifier_installed() -> bool:
    return find_spec(VERIFIER_MODULE) is not None


def services(gateway_port: int, names: Sequence[str] | None = None,
             serving: Sequence[ServingProvider] = ()) -> list[Child]:
    """The stack's services: the indexer, worker and gateway through :mod:`deploy.child` (shared
    logging set-up), then one endpoint per serving provider and the batch verifier (when its
    module is installed), in the order they start (they stop in reverse)."""
    py = sys.executable
    known = {
        "indexer": ["indexer", "run"],
        "worker": ["worker", "run", "--devnet-role", "provider"],
        "gateway": ["gateway", "run", "--port", str(gateway_port)],
    }
    children = []
    for name, argv in known.items():
        if names is not None and name not in names:
            continue
        if find_spec(f"{name}.cli"):
            children.append(Child(name, [py, "-m", "deploy.child", *argv]))
    for p in serving:
        if names is None or p.role in names:
            children.append(Child(p.role, [py, "-m", "worker.serving", "--devnet-role", p.role, "--port", str(p.port),
                                           "--region", p.region, "--models", ",".join(p.models)]))
    if (names is None or "verifier" in names) and verifier_installed():
        children.append(Child("verifier", [py, "-m", VERIFIER_MODULE, "--devnet-role", VERIFIER_ROLE]))
    return children


#: What ``make up`` sets unless the environment says otherwise: a demo-sized serving plane, in
#: which a few hundred requests (``make demo``, about 1 hUSD) already show providers collecting
#: vouchers (threshold 0.1 hUSD instead of 1) and the gateway topping lanes up (checked every
#: second; below 1 hUSD free, back to 1.5; the devnet opens lanes of 1.2). The threshold leaves a
#: few seconds of demo traffic between a top-up's decision and its block. The gateway's rate
#: limits (240 requests a minute per wallet by default) would refuse most of a demo's requests
#: with 429: on the devnet one wallet sends them all.
STACK_DEFAULTS = {
    "HEARTH_GATEWAY_RATE_LIMIT_WALLET_PER_MIN": "60000",
    "HEARTH_GATEWAY_RATE_LIMIT_IP_PER_MIN": "60000",
    "HEARTH_SERVING_COLLECT_THRESHOLD": "100000",
    "HEARTH_GATEWAY_LANE_TOPUP_THRESHOLD": "1000000",
    "HEARTH_GATEWAY_LANE_TOPUP_TARGET": "1500000",
    "HEARTH_GATEWAY_LANE_TOPUP_INTERVAL_S": "1",
}


def child_environment(parent: Mapping[str, str], data: Path) -> dict[str, str]:
    """The services' environment: :data:`STACK_DEFAULTS`, then the supervisor's own environment
    passed through (it wins), with the data directory they share made explicit. Each service
    reads its part through its Settings class (``HEARTH_INDEXER_*``, ``HEARTH_WORKER_*``,
    ``HEARTH_GATEWAY_*``, ``HEARTH_SERVING_*``); each database is named by its own service's
    variable (``HEARTH_INDEXER_DATABASE_URL``, ``HEARTH_GATEWAY_DATABASE_URL``)."""
    return {**STACK_DEFAULTS, **parent, "HEARTH_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}


#: how long the supervisor waits for every service's ``/healthz`` before it warns (the stack
#: keeps running: a service may still come up, or crash and be reported by the watch loop)
READY_TIMEOUT_S = 180.0


def report_ready(health: Mapping[str, str], stop: threading.Event, *, timeout_s: float = READY_TIMEOUT_S,
                 poll_s: float = 0.5) -> None:
    """Polls each ``name -> /healthz URL`` until all answer 200, then prints ``stack ready``; after
    ``timeout_s`` prints which do not answer instead. Runs in a thread beside the watch loop, which
    sets ``stop`` when the stack stops."""
    import httpx

    t0 = time.monotonic()
    pending = dict(health)
    with httpx.Client(timeout=2.0) as http:
        while pending and not stop.is_set():
            for name, url in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        del pending[name]
            if pending and time.monotonic() - t0 > timeout_s:
                console.print(f"[yellow]not ready after {timeout_s:.0f} s: {', '.join(pending)} "
                              "(no answer on /healthz)[/]")
                return
            if pending:
                stop.wait(poll_s)
    if not pending:
        console.print(f"[green]stack ready[/] in {time.monotonic() - t0:.1f} s: {', '.join(health)} answer; "
                      "`make demo` or the README's clients can start")


def run_stack(port: int, chain_id: int, block_time: float | None, gateway_port: int, *,
              restart: bool | None = None, stop_timeout: float = 10.0,
              provider_ports: Sequence[int] = (8101, 8102)) -> None:
    from deploy.devnet import serving_providers

    install_stop_signals()
    settings = CliSettings()
    restart = settings.up_restart if restart is None else restart
    serving = serving_providers(list(provider_ports))
    dn = None
    sup: Supervisor | None = None
    ready_stop = threading.Event()
    try:
        with console.status("starting Anvil, compiling, deploying, funding and staking..."):
            dn = bring_up(port=port, chain_id=chain_id, block_time=block_time,
                          anvil_log=settings.data_dir / "anvil.log", serving=serving)
        console.print(f"[green]devnet up[/] at {dn.anvil.rpc_url} (chain id {chain_id})")
        for line in deployment_lines(dn.manifest, settings.manifest_file()):
            console.print(line)
        env = child_environment(os.environ, settings.data_dir)
        anvil = dn.anvil
        from deploy.scaleout import extra_services

        sup = Supervisor(services(gateway_port, serving=serving) + extra_services(gateway_port), env,
                         restart=restart, stop_timeout=stop_timeout,
                         also_alive=lambda: anvil.proc is not None and anvil.proc.poll() is None)
        sup.start()
        health = {c.name: f"http://127.0.0.1:{gateway_port}/healthz" for c in sup.children if c.name == "gateway"}
        health.update({p.role: f"{p.endpoint}/healthz" for p in serving})
        if any(c.name == "gateway" for c in sup.children):
            console.print(f"[green]gateway[/] at http://127.0.0.1:{gateway_port}/ (dashboard), /docs (API)")
        for p in serving:
            llm = f", {LLM_NAME} at {p.llm_price}" if p.llm_price is not None else ""
            console.print(f"[green]provider[/] {p.role} at {p.endpoint}: region {p.region}, hUSD wei per token: "
                          f"{MINILM_NAME} at {p.price}{llm} ({dn.accounts[p.role].address})")
        if not verifier_installed():
            console.print(f"(no batch verifier: {VERIFIER_MODULE} is not installed)")
        console.print(f"payer {dn.accounts['client'].address} (role client) lets the gateway top its lanes up; "
                      "`make demo` sends requests through the gateway with the official openai client")
        console.print(f"Ctrl-C (or SIGTERM) stops everything; crashed services {'restart' if restart else 'stop it'}.")
        threading.Thread(target=report_ready, args=(health, ready_stop), daemon=True, name="ready").start()
        why = sup.watch()
        console.print(f"[red]{why}; stopping[/]" if why == "anvil exited" else "stopping...")
    except (StopRequested, KeyboardInterrupt) as exc:
        console.print(f"{exc or 'interrupted'}: stopping...")
    finally:
        ignore_stop_signals()
        ready_stop.set()
        if sup is not None:
            ended = sup.stop()
            console.print("services stopped: " + ", ".join(f"{n} {how}" for n, how in ended.items()))
        if dn is not None:
            dn.anvil.stop()
        console.print("stopped.")
