"""The `make up` supervisor: children stopped with SIGTERM (SIGKILL only after the timeout),
also when the supervisor was started with SIGINT ignored; optional restarts with backoff; a
log without Alembic's plugin noise and with the manifest path on one line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deploy.devnet import free_port
from deploy.up import Child, Supervisor, stop_children, verifier_installed

REPO = Path(__file__).resolve().parents[2]

# A service stand-in: ignores SIGINT (as a child of a script would), stops cleanly on SIGTERM.
POLITE = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""")
STUBBORN = POLITE.replace("lambda *_: sys.exit(0)", "signal.SIG_IGN")


def child(name: str, code: str) -> Child:
    return Child(name, [sys.executable, "-c", code])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_ready(children: list[Child]) -> None:
    time.sleep(0.5)
    for c in children:
        assert c.alive(), c.name


def test_children_that_ignore_sigint_are_stopped_by_sigterm_without_a_kill() -> None:
    kids = [child("a", POLITE), child("b", POLITE)]
    for c in kids:
        c.start(dict(os.environ))
    wait_ready(kids)
    t0 = time.monotonic()
    ended = stop_children(kids, timeout=10)
    assert time.monotonic() - t0 < 5
    assert ended == {"a": "exit 0", "b": "exit 0"}


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout_and_the_others_are_not_held_up() -> None:
    kids = [child("stubborn", STUBBORN), child("polite", POLITE)]
    for c in kids:
        c.start(dict(os.environ))
    wait_ready(kids)
    t0 = time.monotonic()
    ended = stop_children(kids, timeout=1.0)
    assert 1.0 <= time.monotonic() - t0 < 4
    assert ended == {"stubborn": "killed", "polite": "exit 0"}
    assert all(gone(c.proc.pid) for c in kids if c.proc)


def test_a_crashed_child_stops_the_stack_when_restarts_are_off() -> None:
    sup = Supervisor([child("crashy", "import sys; sys.exit(3)")], dict(os.environ), poll_s=0.05)
    sup.start()
    assert sup.watch() == "crashy exited with 3"


def test_a_crashed_child_is_restarted_with_a_doubling_backoff_when_restarts_are_on(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    code = f"import time; open({str(starts)!r}, 'a').write(f'{{time.monotonic()}}\\n'); raise SystemExit(1)"
    deadline = time.monotonic() + 3.5
    sup = Supervisor([child("crashy", code)], dict(os.environ), restart=True, restart_backoff=0.25,
                     restart_backoff_max=1.0, poll_s=0.02, also_alive=lambda: time.monotonic() < deadline)
    sup.start()
    assert sup.watch() == "anvil exited"
    sup.stop()
    times = [float(x) for x in starts.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # backoffs 0.25, 0.5, 1.0, 1.0 (capped) plus the start-up time of python each time
    assert sup.children[0].restarts == len(times) - 1 >= 3, gaps
    assert gaps[0] < gaps[1] < gaps[2] + 0.2 and gaps[1] >= 0.5 and gaps[2] >= 1.0, gaps


def _healthy(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


#: What `make up` runs: the per-job stack, two serving-plane providers (MiniLM and SmolLM2), and
#: the batch verifier where its module is installed.
SERVICES = {"indexer", "worker", "gateway", "provider-eu", "provider-us"} | ({"verifier"} if verifier_installed()
                                                                              else set())


def stream_a_chat(gateway_port: int, data: Path) -> tuple[str, str, int]:
    """What README's chat snippet does against `make up`, with the devnet's set-up only (the payer's
    lanes and signer authorization from `setup_serving_plane`): an API key, then a streamed
    SmolLM2 chat completion through the official client. Returns (text, provider, completion tokens)."""
    from openai import OpenAI

    from common import accounts
    from deploy.demo_serving import create_api_key

    gw = f"http://127.0.0.1:{gateway_port}"
    key = create_api_key(gw, accounts.load(data / accounts.ACCOUNTS_FILE)["client"].key, 10**6)
    with OpenAI(base_url=f"{gw}/v1", api_key=key, timeout=120) as client:
        parts, hearth, total = [], {}, 0
        for chunk in client.chat.completions.create(
                model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Say hello."}], max_tokens=4,
                seed=1, stream=True, stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                hearth = (chunk.model_extra or {})["hearth"]
            if chunk.usage:
                total = chunk.usage.completion_tokens
    return "".join(parts), str(hearth["provider"]), total


@pytest.mark.slow
def test_make_up_started_with_sigint_ignored_serves_chat_and_stops_every_child_within_5s_of_sigterm(
        tmp_path: Path) -> None:
    # A long data directory: the manifest path must still be printed on one line.
    data = tmp_path / ("a-long-directory-name-so-that-the-manifest-path-is-wider-than-eighty-columns" * 2)
    data.mkdir()
    rpc, gw, eu, us = free_port(), free_port(), free_port(), free_port()
    log_path = tmp_path / "up.log"
    env = {**os.environ, "HEARTH_DATA_DIR": str(data), "PYTHONPATH": str(REPO), "COLUMNS": "80",
           "HEARTH_LOG_LEVEL": "INFO"}
    env.pop("HEARTH_MANIFEST", None)
    with open(log_path, "w") as out:
        sup = subprocess.Popen(
            [sys.executable, "-m", "deploy", "up", "--port", str(rpc), "--gateway-port", str(gw),
             "--provider-ports", f"{eu},{us}"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a script's background job
        )
    try:
        deadline = time.monotonic() + 240
        while "stops everything" not in log_path.read_text():
            assert sup.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        # Until every service is in its loop (signal handlers installed): the supervisor saw the
        # gateway and both providers (SmolLM2 loaded) answer, the worker has logged its node line,
        # the indexer has indexed.
        while not (re.search(r"worker \| .* node 0x", log_path.read_text()) and "stack ready in" in log_path.read_text()
                   and "indexer ready" in log_path.read_text()):
            assert sup.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        text = log_path.read_text()
        pids = {m.group(1): int(m.group(2)) for m in re.finditer(r"started ([\w-]+) \(pid (\d+)\)", text)}
        assert set(pids) == SERVICES, text
        assert all(not gone(p) for p in pids.values()), text
        assert _healthy(gw) and _healthy(eu) and _healthy(us), text
        # Both providers load SmolLM2 and the devnet declared it served with their quotes: chat is routed.
        assert text.count("loaded SmolLM2-135M-Instruct in") == 2, text
        reply, provider, completion = stream_a_chat(gw, data)
        assert reply and 1 <= completion <= 4, (reply, completion)
        addresses = re.findall(r"provider provider-(?:eu|us) at \S+: .*\((0x[0-9a-fA-F]{40})\)", text)
        assert len(addresses) == 2 and provider in addresses, (provider, text)

        sup.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        while not all(gone(p) for p in pids.values()) and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert all(gone(p) for p in pids.values()), f"children left after 5 s: {pids}\n{log_path.read_text()}"
        sup.wait(timeout=10)
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait()
    text = log_path.read_text()
    ended = re.search(r"services stopped: (.*)", text)
    assert ended, text
    how = dict(part.split(" ", 1) for part in ended.group(1).split(", "))
    assert set(how) == SERVICES, text
    assert all(h in ("exit 0", "terminated") for h in how.values()), text  # clean stops: no SIGKILL
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", rpc)) != 0, "anvil still listening"
    assert "alembic.runtime.plugins" not in text
    assert re.search(rf"^  manifest +{re.escape(str(data / 'manifest.json'))}$", text, re.M), text


MIGRATE = textwrap.dedent("""
    import sys
    from sqlmodel import create_engine
    from common.log import setup_logging
    from gateway import store
    from indexer import db
    setup_logging("INFO", **({} if sys.argv[2] == "quiet" else {"quiet": ()}))
    store.migrate(create_engine(f"sqlite:///{sys.argv[1]}/gateway.db"))
    db.migrate(create_engine(f"sqlite:///{sys.argv[1]}/indexer.db"))
""")


def test_the_services_migrations_log_no_alembic_plugin_lines_at_info(tmp_path: Path) -> None:
    def log_of(mode: str) -> str:
        (tmp_path / mode).mkdir()
        r = subprocess.run([sys.executable, "-c", MIGRATE, str(tmp_path / mode), mode], cwd=REPO, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True)
        return r.stderr

    # Alembic registers its plugins once per process, at INFO: what each service's log showed.
    assert log_of("loud").count("alembic.runtime.plugins") >= 5
    assert "alembic.runtime.plugins" not in log_of("quiet")


def test_sigint_stops_a_supervisor_that_was_started_with_sigint_ignored() -> None:
    code = textwrap.dedent("""
        import time
        from deploy.up import StopRequested, install_stop_signals
        install_stop_signals()
        try:
            print("ready", flush=True)
            time.sleep(30)
        except StopRequested as exc:
            print(f"stopping on {exc}", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert p.stdout and p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    assert "stopping on signal SIGINT" in out and p.returncode == 0


def test_the_stack_runs_both_serving_providers_and_the_verifier_only_where_its_module_is_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy import up
    from deploy.devnet import serving_providers

    serving = serving_providers([9101, 9102])
    monkeypatch.setattr(up, "verifier_installed", lambda: False)
    kids = up.services(8000, serving=serving)
    assert [c.name for c in kids] == ["indexer", "worker", "gateway", "provider-eu", "provider-us"]
    assert list(kids[3].argv[1:]) == ["-m", "worker.serving", "--devnet-role", "provider-eu", "--port", "9101",
                                      "--region", "eu-west", "--models", "all-MiniLM-L6-v2,SmolLM2-135M-Instruct"]
    assert list(kids[4].argv[-6:]) == ["--port", "9102", "--region", "us-east", "--models",
                                       "all-MiniLM-L6-v2,SmolLM2-135M-Instruct"]
    assert [(p.price, p.llm_price) for p in serving] == [(150, 400), (100, 300)]
    monkeypatch.setattr(up, "verifier_installed", lambda: True)
    kids = up.services(8000, serving=serving)
    assert kids[-1].name == "verifier" and list(kids[-1].argv[1:3]) == ["-m", up.VERIFIER_MODULE]


def test_the_stacks_demo_sized_defaults_give_way_to_the_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.up import STACK_DEFAULTS, child_environment
    from gateway.settings import GatewaySettings

    env = child_environment({"HEARTH_SERVING_COLLECT_THRESHOLD": "7"}, tmp_path)
    assert env["HEARTH_SERVING_COLLECT_THRESHOLD"] == "7"
    assert env["HEARTH_GATEWAY_LANE_TOPUP_TARGET"] == STACK_DEFAULTS["HEARTH_GATEWAY_LANE_TOPUP_TARGET"]
    assert env["HEARTH_DATA_DIR"] == str(tmp_path)
    # The gateway reads them under these names (a misspelt one would be ignored silently).
    for k, v in STACK_DEFAULTS.items():
        monkeypatch.setenv(k, v)
    gw = GatewaySettings(data_dir=tmp_path)
    assert (gw.rate_limit_wallet_per_min, gw.rate_limit_ip_per_min, gw.lane_topup_threshold, gw.lane_topup_target,
            gw.lane_topup_interval_s) == (60000, 60000, 1_000_000, 1_500_000, 1.0)
