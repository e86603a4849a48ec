"""Fault-injection run: the serving plane answers embeddings (and, with ``--chat-share``, chat)
requests from several clients while a seeded scheduler breaks it, then the chain and the
databases are checked.

The stack (all on this machine): Anvil (automine), a flaky JSON-RPC proxy in front of it that
every service talks to, the indexer (``python -m indexer run``), the gateway (``python -m
gateway run``) and two provider endpoints (``python -m worker.serving``, two regions), each a
process in its own process group.

Faults, at moments drawn from ``--seed`` (as fractions of the requests sent):

* ``provider_kill``: SIGKILL a provider's endpoint (its process group), restart it after a short
  pause;
* ``gateway_kill``: SIGKILL the gateway, restart it (clients see connection errors meanwhile);
* ``indexer_kill``: SIGKILL the indexer, restart it (it resumes from its checkpoint);
* ``provider_stop``: SIGSTOP a provider past the gateway's provider timeout, then SIGCONT;
* ``reorg``: ``anvil_reorg`` of 1 to 3 blocks (never below the block the load started at) straight
  on Anvil: the blocks are replaced by empty
  ones and their transactions (batch commits, collects, announcements) are gone, as when a
  chain reorganises and the orphaned transactions are not re-included; the providers find their
  dropped commits and collects and send them again, and the indexer rolls back;
* the proxy, all along, with probabilities drawn from its own seeded generator: an HTTP 503
  before forwarding, a dropped connection before forwarding, a slow answer (0.5 to 2.5 s), and a
  dropped connection *after* forwarding (the call took effect, its answer is lost).

A process that dies on its own (a provider whose start-up RPC calls hit the proxy's faults)
is restarted by a watchdog and counted in ``unexpected_crashes``.

With ``chat_share`` > 0 the providers serve SmolLM2 too and that share of the requests are chat
completions of ``CHAT_MAX_TOKENS`` tokens (CPU decoding is slow: keep both small).

With a broker URL (``--broker-url``, Redis; the default) each provider runs its embedding
batches on a Celery worker of its own (prefork, two pool processes, ``worker.serving.fanout``),
and one more fault is planned:

* ``celery_kill``: SIGKILL one pool process of a provider's Celery worker, one running a task when
  there is one (its master starts another and hands the task back to the queue).

Clients send each request with an ``Idempotency-Key`` of its own and, as a careful client does,
send it again with the same key after a connection error, a 409, 429, 502 or 503 (after its
``Retry-After``, else 1 s), for up to ``retry_for_s`` seconds: an answer lost after its charge
(the gateway killed between recording and sending it) is replayed, not charged again. (A client
that gives up before the gateway is back leaves that charge standing: ``requests_lost``.)

Checks, once the clients are done and the proxy passes everything through again:

* every request a client got a 200 for is a served row in the gateway's database, and every
  served row was answered to its client (``requests_lost`` counts both kinds of mismatch, plus
  answered requests that are not a leaf of a committed batch of the provider that answered);
* each answered request is exactly one leaf at the provider that was paid for it, in a batch
  committed on-chain with the same root (``paid_twice`` counts a second leaf at that provider, or
  a lane that collected more than the gateway recorded); leaves of requests the gateway did not
  record (a provider that answered after the gateway gave up on it) are unpaid work, reported;
* each lane's collected value equals the gateway's served value for it to the wei, the API key
  was charged exactly that, lanes and deposits add up to the escrow's token balance, and each
  lane's balance plus collected equals what was allocated to it;
* the indexer's database equals a fresh index of the canonical chain at the same block;
* no process of the run is left (every process group started is empty).

Writes ``bench/results/faults.json``: ``requests``, ``requests_answered``, ``requests_lost``,
``paid_twice``, ``kills`` by kind, ``seed`` and the detail of every check.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "faults.json"
USD = 10**6
#: devnet role -> (region, price per unit)
PROVIDERS = {"provider": ("eu", 200), "verifier": ("us", 100)}
LANE = 200 * USD
WORDS = ("hearth", "faults", "survive", "provider", "gateway", "receipt", "batch", "voucher", "lane", "escrow",
         "kill", "restart", "answer", "chain", "proxy", "timeout")
EMB_MODEL, CHAT_MODEL = "all-MiniLM-L6-v2", "SmolLM2-135M-Instruct"
CHAT_MAX_TOKENS = 4


# ---------------------------------------------------------------------------- the flaky RPC proxy


@dataclass
class FlakyRpc:
    """A JSON-RPC proxy in front of Anvil that injects faults while ``enabled``."""

    upstream: str
    seed: int
    p_error: float = 0.03
    p_drop: float = 0.02
    p_slow: float = 0.02
    p_drop_after: float = 0.01
    enabled: bool = False
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("forwarded", "error", "drop", "slow", "drop_after"), 0))

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        up = urlparse(self.upstream)
        self._host, self._port = up.hostname or "127.0.0.1", up.port or 80
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                fault = proxy._draw()
                if fault == "error":
                    self._answer(503, b'{"error": "flaky proxy"}')
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault == "slow":
                    time.sleep(0.5 + 2.0 * proxy._uniform())
                conn = http.client.HTTPConnection(proxy._host, proxy._port, timeout=60)
                try:
                    conn.request("POST", "/", body, {"content-type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                finally:
                    conn.close()
                if fault == "drop_after":  # it happened upstream; the caller never hears of it
                    self.close_connection = True
                    return
                self._answer(status, data)

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a caller that hung up on a slow answer is one of the faults, not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="flaky-rpc", daemon=True)
        self._thread.start()

    def _uniform(self) -> float:
        with self._lock:
            return self._rng.random()

    def _draw(self) -> str | None:
        with self._lock:
            if not self.enabled:
                self.counts["forwarded"] += 1
                return None
            r = self._rng.random()
            for kind, p in (("error", self.p_error), ("drop", self.p_drop), ("slow", self.p_slow),
                            ("drop_after", self.p_drop_after)):
                if r < p:
                    self.counts[kind] += 1
                    return kind
                r -= p
            self.counts["forwarded"] += 1
            return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A service process in its own process group, restartable; every group ever started is kept."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    groups: list[int] = field(default_factory=list)
    starts: int = 0
    #: ready when this answers True (instead of a 200 from ``health_url``)
    probe: Callable[[], bool] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        self.groups.append(self.proc.pid)
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-3000:]}")
            if self.probe is not None:
                if self.probe():
                    return
                continue
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.health_url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy after {timeout}s: {self.log.read_text(errors='replace')[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            assert self.proc is not None
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        for pgid in self.groups:  # whatever a service left in its group goes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


def celery_answers(app: Any, name: str) -> bool:
    """Whether the Celery worker ``name`` answers a ping."""
    return bool(app.control.ping(destination=[name], timeout=0.5))


def live_in_groups(groups: list[int]) -> list[int]:
    """Pids of processes (zombies excluded) whose process group is one of ``groups``."""
    wanted, found = set(groups), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) in wanted:
            found.append(int(d.name))
    return found


# ---------------------------------------------------------------------------- the index


def indexed_block(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.text("SELECT block_number FROM checkpoints WHERE id = 1")).scalar_one())
    except Exception:  # noqa: BLE001 - not created yet
        return -1
    finally:
        engine.dispose()


def wait_indexed(url: str, block: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while indexed_block(url) < block:
        if time.monotonic() > end:
            raise RuntimeError(f"the index is at {indexed_block(url)}, wanted {block}")
        time.sleep(0.2)


def compare_indexes(url: str, fresh_url: str, head: int) -> tuple[list[str], int]:
    """Differences between the run's index and a fresh index of the canonical chain (both at
    ``head``), and how many rows the fresh index has."""
    import sqlalchemy as sa

    from indexer.projector import PRIMARY_KEYS
    from indexer.store import TABLES

    def tables(u: str) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
        engine = sa.create_engine(u)
        try:
            with engine.connect() as conn:
                return {name: {tuple(r[k] for k in PRIMARY_KEYS[name]): dict(r)
                               for r in conn.execute(t.select()).mappings()} for name, t in TABLES.items()}
        finally:
            engine.dispose()

    got, want = tables(url), tables(fresh_url)
    diff = []
    if indexed_block(url) != head or indexed_block(fresh_url) != head:
        diff.append(f"checkpoints {indexed_block(url)} and {indexed_block(fresh_url)}, head {head}")
    for name in TABLES:
        for k in sorted(set(got[name]) | set(want[name]), key=str):
            if got[name].get(k) != want[name].get(k):
                diff.append(f"{name} {k}: {got[name].get(k)} != {want[name].get(k)}")
    return diff, sum(len(rows) for rows in want.values())


# ---------------------------------------------------------------------------- the run


@dataclass
class Outcome:
    index: int
    status: int | None
    request_id: str | None = None
    provider: str | None = None
    cost: int = 0
    error: str | None = None
    chat: bool = False
    #: tries it took (the same Idempotency-Key each time); replayed: the last answer was a replay
    tries: int = 1
    replayed: bool = False


def run(n: int = 2000, clients: int = 8, seed: int = 7, kills: dict[str, int] | None = None,
        provider_timeout_s: float = 2.0, proxy_faults: bool = True, chat_share: float = 0.0,
        broker_url: str | None = None, retry_for_s: float = 60.0, log: Any = print) -> dict[str, Any]:
    """The whole run; returns the results (see the module docstring)."""
    from eth_account import Account
    from eth_utils import keccak

    from contracts.merkle import verify as verify_proof
    from contracts.serving import work_receipt_from_json
    from contracts.settlement import Settlement, work_leaf
    from deploy.devnet import bring_up, free_port
    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    kills = kills if kills is not None else {"provider_kill": 8, "gateway_kill": 5, "indexer_kill": 3,
                                             "provider_stop": 5, "reorg": 5,
                                             **({"celery_kill": 4} if broker_url else {})}
    if kills.get("celery_kill") and not broker_url:
        raise ValueError("celery_kill needs the providers on Celery workers: give a broker URL")
    rng = random.Random(seed)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="hearth-faults-"))
    dn = bring_up(port=free_port(), write=False, anvil_log=tmp / "anvil.log")
    proxy = FlakyRpc(dn.anvil.rpc_url, seed + 1)
    procs: dict[str, Proc] = {}
    try:
        manifest_path = dn.manifest.save(tmp / "manifest.json")
        index_url = f"sqlite:///{tmp / 'indexer.db'}"
        base_env = {**os.environ, "PYTHONPATH": str(ROOT), "HEARTH_MANIFEST": str(manifest_path),
                    "HEARTH_INDEXER_DATABASE_URL": index_url, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                    "MKL_NUM_THREADS": "1", "HEARTH_LOG_LEVEL": "WARNING"}
        metrics_port = free_port()
        procs["indexer"] = Proc("indexer", [sys.executable, "-m", "indexer", "run"], {
            **base_env, "HEARTH_DATA_DIR": str(tmp), "HEARTH_INDEXER_RPC_URL": proxy.url,
            "HEARTH_INDEXER_POLL_INTERVAL": "0.2", "HEARTH_INDEXER_METRICS_PORT": str(metrics_port)},
            f"http://127.0.0.1:{metrics_port}/metrics", tmp / "indexer.log")
        gw_port = free_port()
        gw = f"http://127.0.0.1:{gw_port}"
        procs["gateway"] = Proc("gateway", [sys.executable, "-m", "gateway", "run", "--port", str(gw_port)], {
            **base_env, "HEARTH_DATA_DIR": str(tmp / "gateway"),
            "HEARTH_GATEWAY_RELAYER_KEY": dn.accounts["relayer"].key,
            "HEARTH_GATEWAY_RPC_URL": proxy.url, "HEARTH_GATEWAY_PUBLIC_URL": gw,
            "HEARTH_GATEWAY_SERVING_MODE": "serving", "HEARTH_GATEWAY_PROVIDER_TIMEOUT_S": str(provider_timeout_s),
            "HEARTH_GATEWAY_SERVING_REFRESH_S": "0.2",
            "HEARTH_GATEWAY_RESERVATION_TTL_S": str(3 * provider_timeout_s + 4),
            "HEARTH_GATEWAY_RATE_LIMIT_IP_PER_MIN": "1e12",
            "HEARTH_GATEWAY_RATE_LIMIT_WALLET_PER_MIN": "1e12"}, f"{gw}/healthz", tmp / "gateway.log")
        queues: dict[str, str] = {}
        if broker_url:
            from worker.celery_app import make_app
            from worker.settings import WorkerSettings

            celery_app = make_app(WorkerSettings(data_dir=tmp, broker_url=broker_url))
            for role in PROVIDERS:
                queue = queues[role] = f"hearth-faults-{role}-{secrets.token_hex(3)}"
                name = f"{queue}@{os.uname().nodename}"
                procs[f"celery-{role}"] = Proc(f"celery-{role}", [
                    sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=prefork", "-c", "2",
                    "-Q", queue, "-n", name, "--without-gossip", "--without-mingle", "--loglevel=INFO"], {
                    **base_env, "HEARTH_DATA_DIR": str(tmp / f"celery-{role}"), "HEARTH_WORKER_BROKER_URL": broker_url,
                    "HEARTH_WORKER_QUEUE": queue}, "", tmp / f"celery-{role}.log",
                    probe=functools.partial(celery_answers, celery_app, name))
        for role, (region, price) in PROVIDERS.items():
            port = free_port()
            procs[role] = Proc(role, [sys.executable, "-m", "worker.serving"], {
                **base_env, "HEARTH_DATA_DIR": str(tmp / role), "HEARTH_WORKER_KEY": dn.accounts[role].key,
                "HEARTH_SERVING_RPC_URL": proxy.url, "HEARTH_SERVING_PORT": str(port), "HEARTH_SERVING_ANNOUNCE": "1",
                "HEARTH_SERVING_REGION": region, "HEARTH_SERVING_PRICE": str(price),
                "HEARTH_SERVING_MAX_BATCH_AGE_S": "0.5", "HEARTH_SERVING_COLLECT_THRESHOLD": "1",
                "HEARTH_SERVING_LOG_LEVEL": "WARNING",
                **({"HEARTH_SERVING_MODELS": f"{EMB_MODEL},{CHAT_MODEL}", "HEARTH_SERVING_LLM_KV_PAGES": "64",
                    "HEARTH_SERVING_LLM_MAX_RUNNING": "4"} if chat_share > 0 else {}),
                **({"HEARTH_SERVING_BROKER_URL": broker_url, "HEARTH_SERVING_QUEUE": queues[role],
                    "HEARTH_SERVING_FANOUT_TIMEOUT_S": "10"} if broker_url else {})},
                f"http://127.0.0.1:{port}/healthz", tmp / f"{role}.log")
        for p in procs.values():
            (tmp / p.name).mkdir(exist_ok=True)
            p.start()
        for p in procs.values():
            p.wait_healthy()

        h = dn.hearth
        s = Settlement(h)
        client = dn.accounts["client"]
        deposit = LANE * len(PROVIDERS)
        token_before = {a.address: int(h.usd.functions.balanceOf(a.address).call()) for a in dn.accounts.values()}
        h.sender(client.key).send(h.usd.functions.approve(s.escrow.address, deposit))
        s.deposit(client.key, deposit)
        s.allocate(client.key, client.address, {dn.accounts[r].address: LANE for r in PROVIDERS})
        signer = httpx.get(f"{gw}/v1/serving/signer", params={
            "payer": client.address, "expiry": int(time.time()) + 86400}, timeout=30).json()
        h.sender(client.key).send(s.escrow.functions.authorizeSigner(
            signer["signer"], signer["expiry"], False, bytes.fromhex(signer["proof"][2:])))
        keys = []
        for _ in range(clients):
            key = "hk-" + secrets.token_hex(16)
            td = httpx.get(f"{gw}/v1/api-keys/typed-data", params={
                "wallet": client.address, "api_key_hash": "0x" + keccak(text=key).hex(),
                "spending_cap": 100 * USD}, timeout=30).json()["typed_data"]
            msg = {**td["message"], "spendingCap": int(td["message"]["spendingCap"]),
                   "nonce": int(td["message"]["nonce"])}
            sig = Account.sign_typed_data(client.key, full_message={**td, "message": msg}).signature
            r = httpx.post(f"{gw}/v1/api-keys", json={"grant": td["message"], "signature": "0x" + bytes(sig).hex()},
                           timeout=30)
            if r.status_code != 201:
                raise RuntimeError(f"API key: {r.status_code} {r.text}")
            keys.append(key)
        wait_indexed(index_url, h.w3.eth.block_number, 60)
        end = time.monotonic() + 60
        while len(httpx.get(f"{gw}/v1/serving/providers", timeout=10).json()) < len(PROVIDERS):
            if time.monotonic() > end:
                raise RuntimeError("the gateway never saw both providers")
            time.sleep(0.2)
        log(f"stack up in {time.perf_counter() - t0:.0f}s; {n} requests from {clients} clients, seed {seed}")

        # ---------------------------------------------------------------- load and faults
        plan = sorted((rng.uniform(0.05, 0.85), kind) for kind, k in kills.items() for _ in range(k))
        texts = [[" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(rng.randint(1, 4))]
                 for _ in range(n)]
        is_chat = [rng.random() < chat_share for _ in range(n)]
        outcomes: list[Outcome] = []
        sent = [0]
        lock = threading.Lock()
        done = threading.Event()
        done_kills: dict[str, int] = dict.fromkeys(kills, 0)
        crashes: dict[str, int] = dict.fromkeys(procs, 0)
        fault_lock = threading.Lock()  # the scheduler and the watchdog never restart a process at once

        fired = [0]  # plan entries the scheduler has acted on (or passed over)

        def client_loop(c: int) -> None:
            with httpx.Client(timeout=60) as http:
                while True:
                    with lock:
                        if sent[0] >= n:
                            return
                        # A fault planned at or before this request goes first, so a run never
                        # ends (on a fast machine) with faults of its plan not done. The scheduler
                        # acts at once; a stuck one is given two minutes.
                        held = fired[0] < len(plan) and sent[0] >= plan[fired[0]][0] * n and not (
                            time.perf_counter() - t_load > 120 and fired[0] < len(plan))
                        if not held:
                            i = sent[0]
                            sent[0] += 1
                    if held:
                        time.sleep(0.02)
                        continue
                    # As a careful client does: one Idempotency-Key per request, sent again with
                    # it after a lost answer (the gateway down, no provider free, in flight), so an
                    # answer lost after its charge is replayed instead of charged again.
                    headers = {"authorization": f"Bearer {keys[c]}", "Idempotency-Key": f"faults-{seed}-{i}"}
                    give_up = time.monotonic() + retry_for_s
                    attempt = 0
                    while True:
                        attempt += 1
                        try:
                            if is_chat[i]:
                                r = http.post(f"{gw}/v1/chat/completions", headers=headers, json={
                                    "model": CHAT_MODEL, "max_tokens": CHAT_MAX_TOKENS,
                                    "messages": [{"role": "user", "content": " ".join(texts[i])}]})
                            else:
                                r = http.post(f"{gw}/v1/embeddings", json={"model": EMB_MODEL, "input": texts[i]},
                                              headers=headers)
                            if r.status_code == 200:
                                hh = r.json()["hearth"]
                                o = Outcome(i, 200, hh["request_id"], hh["provider"], int(hh["cost"]), chat=is_chat[i],
                                            tries=attempt, replayed=r.headers.get("idempotent-replayed") == "true")
                                break
                            o = Outcome(i, r.status_code, error=r.text[:200], chat=is_chat[i], tries=attempt)
                            if r.status_code not in (409, 429, 502, 503):
                                break
                            pause = min(float(r.headers.get("retry-after", "0.5") or 0.5), 12.0)
                        except httpx.HTTPError as exc:
                            o = Outcome(i, None, error=f"{type(exc).__name__}: {exc}"[:200], chat=is_chat[i],
                                        tries=attempt)
                            pause = 1.0  # the gateway is down: give it a moment
                        if time.monotonic() + pause > give_up:
                            break
                        time.sleep(pause)
                    with lock:
                        outcomes.append(o)

        busy: set[str] = set()  # killed or stopped on purpose, not back yet: the watchdog leaves them alone
        helpers: list[threading.Thread] = []

        def back_later(target: Proc, kind: str, pause_s: float) -> None:
            time.sleep(pause_s)
            try:
                if kind == "provider_stop":
                    target.signal(signal.SIGCONT)
                else:
                    with fault_lock:
                        target.start()
                    target.wait_healthy()
            except RuntimeError as exc:
                log(f"  {target.name} did not come back at once ({str(exc)[:200]}...)")
            finally:
                with fault_lock:
                    busy.discard(target.name)

        def scheduler() -> None:
            try:
                schedule()
            finally:
                with lock:
                    fired[0] = len(plan)  # whatever was left, the clients are held no longer

        def schedule() -> None:
            roles = list(PROVIDERS)
            for k, (at, kind) in enumerate(plan):
                with lock:
                    fired[0] = k  # the entries before this one are done
                while sent[0] < at * n and not done.is_set():
                    time.sleep(0.05)
                if done.is_set():
                    return
                if kind == "reorg":
                    depth = rng.randint(1, 3)
                    # only blocks mined under load: the set-up's (deposit, signer, keys) nobody sends again
                    waited = time.perf_counter()
                    while (mined := int(h.w3.eth.block_number) - load_block) < 1 and not done.is_set():
                        if time.perf_counter() - waited > 5:  # the clients are held for this fault:
                            h.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
                        time.sleep(0.1)  # nothing may be sent that would be mined otherwise
                    depth = min(depth, mined)
                    if depth < 1:
                        continue
                    with fault_lock:
                        log(f"  {sent[0]:>5}/{n}  reorg of {depth} blocks")
                        try:
                            answer = httpx.post(dn.anvil.rpc_url, json={
                                "jsonrpc": "2.0", "id": 1, "method": "anvil_reorg", "params": [depth, []]}, timeout=30)
                            answer.raise_for_status()
                            if "error" in answer.json():
                                raise httpx.HTTPError(str(answer.json()["error"]))
                            done_kills[kind] += 1
                        except httpx.HTTPError as exc:
                            log(f"  reorg failed: {exc}")
                    continue
                if kind == "celery_kill":
                    celery_kill()
                    continue
                names = {"gateway_kill": ["gateway"], "indexer_kill": ["indexer"]}.get(kind, roles)
                while True:  # a target that is down or coming back is waited for, not skipped
                    with fault_lock:
                        ready = [procs[r] for r in names if procs[r].alive() and r not in busy]
                        if ready or done.is_set():
                            break
                    time.sleep(0.1)
                if not ready:
                    return
                with fault_lock:
                    target = rng.choice(ready)
                    busy.add(target.name)
                    log(f"  {sent[0]:>5}/{n}  {kind} {target.name}")
                    if kind == "provider_stop":
                        target.signal(signal.SIGSTOP)
                        pause = provider_timeout_s + 1.0
                    else:
                        target.kill9()
                        pause = rng.uniform(0.2, 1.0)
                    done_kills[kind] += 1
                t = threading.Thread(target=back_later, args=(target, kind, pause), daemon=True)
                helpers.append(t)
                t.start()

        def celery_kill() -> None:
            """SIGKILL one pool process of a provider's Celery worker, a busy one when a task is
            running (its master starts another; the task goes back to the queue)."""
            import psutil

            while not done.is_set():
                with fault_lock:
                    ready = [p for r, p in procs.items() if r.startswith("celery-") and p.alive() and r not in busy]
                    if ready:
                        target = rng.choice(ready)
                        kids = [c for c in psutil.Process(target.proc.pid).children()  # type: ignore[union-attr]
                                if c.status() != psutil.STATUS_ZOMBIE]
                        if kids:
                            break
                time.sleep(0.1)
            else:
                return
            name = target.argv[target.argv.index("-n") + 1]
            mid_task: list[Any] = []
            end = time.monotonic() + 3.0  # batches take milliseconds: look a few times for a busy one
            while not mid_task and time.monotonic() < end and not done.is_set():
                active = celery_app.control.inspect(destination=[name], timeout=1.0).active() or {}
                busy_pids = {int(t["worker_pid"]) for ts in active.values() for t in ts if t.get("worker_pid")}
                mid_task = [c for c in kids if c.pid in busy_pids]
            victim = rng.choice(mid_task or kids)
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.kill()
                done_kills["celery_kill"] += 1
                celery_mid_task[0] += bool(mid_task)
                log(f"  {sent[0]:>5}/{n}  celery_kill {target.name} pool process {victim.pid}"
                    f"{' (running a task)' if mid_task else ''}")

        celery_mid_task = [0]

        def watchdog() -> None:
            while not done.is_set():
                with fault_lock:
                    for p in procs.values():
                        if not p.alive() and p.name not in busy:
                            crashes[p.name] += 1
                            log(f"  {p.name} crashed on its own (exit {p.proc.returncode if p.proc else '?'}); "
                                "restarting it")
                            p.start()
                time.sleep(0.5)

        load_block = int(h.w3.eth.block_number)
        proxy.enabled = proxy_faults
        t_load = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(c,), daemon=True) for c in range(clients)]
        sched = threading.Thread(target=scheduler, daemon=True)
        dog = threading.Thread(target=watchdog, daemon=True)
        for t in (*threads, sched, dog):
            t.start()
        for t in threads:
            t.join()
        done.set()
        sched.join(300)
        for t in helpers:
            t.join(300)
        dog.join(30)
        load_s = time.perf_counter() - t_load
        proxy.enabled = False
        for p in procs.values():
            if not p.alive():
                crashes[p.name] += 1
                p.start()
            p.wait_healthy()
        log(f"load done in {load_s:.0f}s: {sum(o.status == 200 for o in outcomes)} answered of {len(outcomes)}; "
            f"checking")

        # ---------------------------------------------------------------- checks
        import sqlalchemy as sa

        gw_db = sa.create_engine(f"sqlite:///{tmp / 'gateway' / 'gateway.db'}")

        def spent_total() -> int:
            with gw_db.connect() as c:
                return int(c.execute(sa.text("SELECT coalesce(sum(spent), 0) FROM gw_api_keys")).scalar_one())

        with gw_db.connect() as c:
            rows = {r.request_id: r for r in c.execute(sa.text(
                "SELECT request_id, provider, value, key_hash FROM gw_serving_requests"))}
        answered = {o.request_id: o for o in outcomes if o.status == 200 and o.request_id}
        charged_unanswered = sorted(set(rows) - set(answered))
        answered_unrecorded = sorted(set(answered) - set(rows))
        wrong_provider = sorted(rid for rid, o in answered.items() if rid in rows and rows[rid].provider != o.provider)

        by_addr = {dn.accounts[r].address: procs[r] for r in PROVIDERS}
        recorded = {a: sum(int(r.value) for r in rows.values() if r.provider == a) for a in by_addr}
        end = time.monotonic() + 90
        leaves: dict[str, list[tuple[str, int]]] = {}
        while True:
            # The providers' batches first, the chain's logs after: a batch a provider committed
            # while this runs is then on both sides (read the other way round, a commit landing
            # between the two reads looked like a batch missing from the chain).
            pages = []
            for addr, p in by_addr.items():
                url = p.health_url.removesuffix("/healthz")
                for bid in httpx.get(f"{url}/v1/serving/status", timeout=30).json()["batch_ids"]:
                    pages.append((addr, p, bid, httpx.get(f"{url}/v1/serving/batches/{bid}/leaves", timeout=30).json()))
            on_chain = {int(lg["args"]["batchId"]): (lg["args"]["provider"], bytes(lg["args"]["root"]))
                        for lg in s.batches.events.BatchCommitted().get_logs(from_block=0)}
            leaves, bad_proofs, bad_detail = {}, 0, []
            for addr, p, bid, page in pages:
                root = bytes.fromhex(page["batch"]["root"][2:])
                if on_chain.get(bid) != (addr, root):
                    bad_proofs += 1
                    got = on_chain.get(bid)
                    same_root = [b for b, (_, r2) in on_chain.items() if r2 == root]
                    bad_detail.append(f"{p.name} batch id {bid}: ledger root 0x{root.hex()[:16]}, chain "
                                      + (f"{got[0]} root 0x{got[1].hex()[:16]}" if got else "has no such batch")
                                      + f"; this root is on-chain as batch ids {same_root}")
                for lf in page["leaves"]:
                    rec = work_receipt_from_json(lf["receipt"])
                    if not verify_proof(root, page["batch"]["count"], lf["index"],
                                        work_leaf(rec, s.chain_id, s.batches.address),
                                        [bytes.fromhex(x[2:]) for x in lf["proof"]]):
                        bad_proofs += 1
                        bad_detail.append(f"{p.name} batch id {bid} leaf {lf['index']}: proof does not verify")
                    leaves.setdefault("0x" + rec.request_id.hex(), []).append((addr, bid))
            collected = {a: s.lane(client.address, a).collected for a in by_addr}
            settled = all(any(holder == rows[rid].provider for holder, _ in leaves.get(rid, [])) for rid in rows)
            charged_total = spent_total()  # reservations of a killed gateway are given back by its successor
            if (settled and not bad_proofs and collected == recorded and charged_total == sum(recorded.values())) \
                    or time.monotonic() > end:
                break
            time.sleep(1.0)
        not_in_batch = sorted(rid for rid in answered if rid in rows
                              and not any(holder == rows[rid].provider for holder, _ in leaves.get(rid, [])))
        twice_at_payee = sorted(rid for rid in rows
                                if sum(holder == rows[rid].provider for holder, _ in leaves.get(rid, [])) > 1)
        unpaid_leaves = sorted(rid for rid, hs in leaves.items() for holder, _ in hs
                               if rid not in rows or holder != rows[rid].provider)
        overpaid = {a: collected[a] - recorded[a] for a in by_addr if collected[a] > recorded[a]}
        unsettled = {a: recorded[a] - collected[a] for a in by_addr if collected[a] < recorded[a]}
        gw_db.dispose()

        accounts = [a.address for a in dn.accounts.values()]
        escrow_tokens = int(h.usd.functions.balanceOf(s.escrow.address).call())
        held = sum(s.deposit_of(a) for a in accounts)
        for payer in accounts:
            for payee in accounts:
                held += s.lane(payer, payee).balance
        for payee in accounts:
            held += int(s.escrow.functions.getBond(payee).call()[0])
        lanes_add_up = all(s.lane(client.address, a).balance + s.lane(client.address, a).collected == LANE
                           for a in by_addr)
        token_after = {a.address: int(h.usd.functions.balanceOf(a.address).call()) for a in dn.accounts.values()}
        providers_paid = all(token_after[a] - token_before[a] == collected[a] for a in by_addr)
        client_paid = token_before[client.address] - token_after[client.address] == deposit

        head = int(h.w3.eth.block_number)
        wait_indexed(index_url, head, 120)
        fresh_url = f"sqlite:///{tmp / 'fresh-index.db'}"
        fresh = IndexerService(IndexerSettings(database_url=fresh_url, poll_interval=0.1,
                                               manifest_path=manifest_path), manifest=dn.manifest)
        fresh.start()
        try:
            fresh.wait_for(head, timeout=120)
        finally:
            fresh.stop()
        index_diff, index_rows = compare_indexes(index_url, fresh_url, head)

        requests_lost = len(charged_unanswered) + len(answered_unrecorded) + len(not_in_batch) + len(wrong_provider)
        paid_twice = len(twice_at_payee) + len(overpaid)
        statuses: dict[str, int] = {}
        chat_statuses: dict[str, int] = {}
        for o in outcomes:
            k = str(o.status) if o.status is not None else "connection_error"
            statuses[k] = statuses.get(k, 0) + 1
            if o.chat:
                chat_statuses[k] = chat_statuses.get(k, 0) + 1
        result = {
            "seed": seed, "requests": len(outcomes), "clients": clients,
            "requests_answered": len(answered), "requests_unanswered": len(outcomes) - len(answered),
            "requests_lost": requests_lost, "paid_twice": paid_twice,
            "chat_share": chat_share, "chat_requests": sum(o.chat for o in outcomes),
            "chat_answered": sum(o.chat and o.status == 200 for o in outcomes),
            "client_retry_for_s": retry_for_s, "requests_retried": sum(o.tries > 1 for o in outcomes),
            "answers_replayed": sum(o.replayed for o in outcomes),
            "kills": done_kills, "kills_total": sum(done_kills.values()), "kills_planned": kills,
            "celery_kills_of_a_busy_process": celery_mid_task[0], "celery_broker": broker_url,
            "celery_pool_processes_lost": sum(procs[f"celery-{r}"].log.read_text(errors="replace").count(
                "exited with 'signal 9 (SIGKILL)'") for r in PROVIDERS) if broker_url else 0,
            "reorg_recoveries": {
                what: sum(procs[r].log.read_text(errors="replace").count(line) for r in PROVIDERS)
                for what, line in (("batches_sent_again", "is no longer on the chain (reorganisation)"),
                                   ("batches_moved", "moved from batch id"),
                                   ("commits_lost_in_flight", "is gone (reorganisation)"),
                                   ("collects_sent_again", "is no longer on the chain: collecting again"),
                                   ("nonces_rewound", "(reorganisation?)"))},
            "unexpected_crashes": crashes, "rpc_faults": {k: v for k, v in proxy.counts.items() if k != "forwarded"},
            "rpc_forwarded": proxy.counts["forwarded"], "statuses": statuses,
            "chat_statuses": chat_statuses,
            "checks": {
                "charged_but_unanswered": len(charged_unanswered), "answered_but_unrecorded": len(answered_unrecorded),
                "answered_not_in_a_committed_batch": len(not_in_batch), "answer_names_another_provider":
                    len(wrong_provider), "second_leaf_at_the_paid_provider": len(twice_at_payee),
                "unpaid_leaves": len(unpaid_leaves), "batches_not_matching_chain_or_bad_proofs": bad_proofs,
                "bad_batches": bad_detail[:10],
                "lanes_overpaid_wei": {a: str(v) for a, v in overpaid.items()},
                "lanes_unsettled_wei": {a: str(v) for a, v in unsettled.items()},
                "keys_charged_equal_served_value": charged_total == sum(recorded.values()),
                "escrow_tokens_equal_deposits_lanes_bonds": escrow_tokens == held,
                "lane_balance_plus_collected_equals_allocation": lanes_add_up,
                "providers_received_what_they_collected": providers_paid,
                "client_paid_its_deposit_only": client_paid,
                "index_equals_a_fresh_index_of_the_chain": not index_diff, "index_rows_compared": index_rows,
                "index_differences": index_diff[:10],
                "charged_but_unanswered_ids": charged_unanswered[:10],
                "unanswered_errors": sorted({f"{'chat' if o.chat else 'embeddings'} {o.status}: {o.error}"[:160]
                                             for o in outcomes if o.status != 200})[:10],
            },
            "provider_timeout_s": provider_timeout_s, "load_s": round(load_s, 1),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    finally:
        for p in procs.values():
            p.stop()
        proxy.close()
        dn.anvil.stop()
    groups = [g for p in procs.values() for g in p.groups]
    result["processes_left"] = len(live_in_groups(groups))
    result["processes_started"] = sum(p.starts for p in procs.values())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--provider-kills", type=int, default=8)
    ap.add_argument("--gateway-kills", type=int, default=5)
    ap.add_argument("--indexer-kills", type=int, default=3)
    ap.add_argument("--provider-stops", type=int, default=5)
    ap.add_argument("--reorgs", type=int, default=5, help="anvil_reorg of 1 to 3 blocks, dropping their transactions")
    ap.add_argument("--celery-kills", type=int, default=4,
                    help="SIGKILLs of a pool process of a provider's Celery worker (a busy one when it can)")
    ap.add_argument("--broker-url", default="redis://127.0.0.1:6379/11",
                    help="Redis for the providers' Celery workers (its database is emptied afterwards)")
    ap.add_argument("--no-celery", action="store_true", help="providers embed in-process (no Redis needed)")
    ap.add_argument("--chat-share", type=float, default=0.1,
                    help=f"share of the requests that are chat completions of {CHAT_MAX_TOKENS} tokens (0: none)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    broker = None if args.no_celery else args.broker_url
    if broker:
        import redis

        try:
            redis.Redis.from_url(broker, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            raise SystemExit(f"Redis at {broker} does not answer ({exc}): start it, give --broker-url, "
                             "or run with --no-celery") from exc
    res = run(args.requests, args.clients, args.seed, {"provider_kill": args.provider_kills,
                                                        "gateway_kill": args.gateway_kills,
                                                        "indexer_kill": args.indexer_kills,
                                                        "provider_stop": args.provider_stops,
                                                        "reorg": args.reorgs,
                                                        **({"celery_kill": args.celery_kills} if broker else {})},
              chat_share=args.chat_share, broker_url=broker)
    if broker:
        redis.Redis.from_url(broker).flushdb()
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"fault-injection run, seed {res['seed']}")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k in ("requests", "requests_answered", "requests_unanswered", "chat_requests", "chat_answered",
              "requests_lost", "paid_twice", "kills_total",
              "processes_left", "wall_s"):
        t.add_row(k, str(res[k]))
    for k, v in res["kills"].items():
        t.add_row(f"kills: {k}", str(v))
    for k, v in res["rpc_faults"].items():
        t.add_row(f"rpc faults: {k}", str(v))
    for k, v in res["reorg_recoveries"].items():
        t.add_row(f"after reorgs: {k}", str(v))
    for k, v in res["checks"].items():
        if not isinstance(v, list):
            t.add_row(f"check: {k}", str(v))
    Console().print(t)
    res["command"] = "python bench/faults.py " + " ".join(sys.argv[1:])
    res["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
