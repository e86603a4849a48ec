"""End-to-end benchmark: the same MiniLM requests (one to eight sentences each) at concurrency
1, 8 and 64 through

(a) ``in_process``: this process's encoder and dynamic batcher (the baseline: no HTTP, no
    signatures, no ledger);
(b) ``serving``: the official path of the serving plane: HTTP to the gateway (a
    ``python -m gateway run`` process) with an API key, which signs a payment receipt and
    forwards to one provider endpoint (a ``python -m worker.serving`` process), checks the
    signed work receipt, records the request and the blobs, and answers; the provider commits
    batches and collects vouchers in the background;
(c) ``per_job``: the same API key on a gateway in ``per_job`` mode, one on-chain job per request
    claimed and delivered by a worker node (``python -m worker run``); fewer requests.

All processes share this machine's cores (loopback, Anvil automining). Prints a table and
writes ``bench/results/e2e.json``: per path and concurrency ``requests_per_s``, ``p50_ms``,
``p99_ms``; ``protocol_overhead_share`` = 1 - serving/in-process requests/s at concurrency 64;
``p50_overhead_ms_c1`` = serving p50 - in-process p50 at concurrency 1; ``batch_gas_per_job`` =
gas of the provider's ``commitBatch`` and ``collect`` transactions per served request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "e2e.json"
USD = 10**6
CONCURRENCY = (1, 8, 64)
WORDS = (
    "hearth", "compute", "network", "inference", "provider", "gateway", "receipt", "batch", "voucher", "lane",
    "escrow", "stake", "verifier", "committee", "embedding", "sentence", "model", "kernel", "latency",
    "throughput", "region", "price", "chain", "block", "merkle", "proof", "challenge", "slash", "settle", "answer",
    "request", "token", "cache",
)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def requests_for(n: int, seed: int = 11) -> list[list[str]]:
    rng = random.Random(seed)
    return [[" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24))) + "." for _ in range(rng.randint(1, 8))]
            for _ in range(n)]


def summary(lat: list[float], wall: float) -> dict[str, Any]:
    return {"requests_per_s": round(len(lat) / wall, 2), "p50_ms": round(1000 * pct(lat, 0.5), 2),
            "p99_ms": round(1000 * pct(lat, 0.99), 2), "requests": len(lat)}


TIMINGS: list[dict[str, Any]] = []


async def run_loop(reqs: list[list[str]], concurrency: int, call: Any) -> dict[str, Any]:
    lat: list[float] = []
    todo = iter(reqs)
    TIMINGS.clear()

    async def worker() -> None:
        for texts in todo:
            t0 = time.perf_counter()
            await call(texts)
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out: dict[str, Any] = summary(lat, time.perf_counter() - t0)
    if TIMINGS:  # p50 of each part the gateway and the provider reported
        flat = [{"gateway_total": t["total"], "provider_round_trip": t["provider_round_trip"],
                 **{f"provider_{k}": v for k, v in (t.get("provider") or {}).items()}} for t in TIMINGS]
        out["p50_parts_ms"] = {k: round(pct([f[k] for f in flat if k in f], 0.5), 2) for k in flat[0]}
    return out


def bench_in_process(reqs: list[list[str]], c: int, enc: Any, batcher: Any) -> dict[str, Any]:
    async def call(texts: list[str]) -> None:
        counts = enc.count_tokens(texts)
        futs = [batcher.submit(f"{secrets.token_hex(8)}:{i}", t, n) for i, (t, n) in enumerate(zip(texts, counts,
                                                                                                    strict=True))]
        for f in futs:
            await asyncio.wrap_future(f)

    asyncio.run(run_loop(reqs[:20], 4, call))  # warm up
    out = asyncio.run(run_loop(reqs, c, call))
    print(f"in_process c={c}: {out}", flush=True)
    return out


@contextlib.asynccontextmanager
async def embeddings_client(base: str, key: str, concurrency: int,
                            timeout: float) -> AsyncIterator[Callable[[list[str], str], Awaitable[dict[str, Any]]]]:
    """``post(texts, label)``: one ``/v1/embeddings`` call with the API key, its JSON body, raising on
    anything but 200. aiohttp, as the load generator: it costs this process (which shares the
    machine's two cores with the gateway and the provider) about half of httpx's CPU per request."""
    conn = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(base, connector=conn, timeout=aiohttp.ClientTimeout(total=timeout),
                                     headers={"authorization": f"Bearer {key}"}) as http:
        async def post(texts: list[str], label: str) -> dict[str, Any]:
            async with http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": texts,
                                                         "encoding_format": "base64"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"{label}: {r.status} {(await r.text())[:300]}")
                body: dict[str, Any] = await r.json()
                return body

        yield post


def bench_http(base: str, key: str, reqs: list[list[str]], counts: dict[int, int], label: str,
               timeout: float, only: tuple[int, ...] = CONCURRENCY) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for c in only:
        n = counts[c]

        async def go(c: int = c, n: int = n) -> dict[str, float]:
            async with embeddings_client(base, key, c, timeout) as post:
                async def call(texts: list[str]) -> None:
                    body = await post(texts, label)
                    if label == "serving":
                        TIMINGS.append(body["hearth"]["timing_ms"])

                if label == "serving":
                    await run_loop(reqs[:20], 4, call)  # warm up (connections, routing EMA)
                return await run_loop(reqs[:n], c, call)

        out[str(c)] = asyncio.run(go())
        print(f"{label} c={c}: {out[str(c)]}", flush=True)
    return out


def wait_http(url: str, what: str, log: Path, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start; see {log}")


def open_serving_client(dn: Any, base: str, indexer: Any, relayer_allowance: int = 0) -> str:
    """The ``client`` wallet set up to pay the devnet's ``provider`` on the serving plane through the
    gateway at ``base``: a deposit with a lane to the provider, the gateway's receipt signer
    authorized, an optional allowance to the relayer (the per-job path pulls from it) and a new API
    key, returned once the index has caught up and the gateway routes to the provider."""
    from eth_account import Account
    from eth_utils import keccak

    from contracts.settlement import Settlement

    h = dn.hearth
    s = Settlement(h)
    client = dn.accounts["client"]
    h.sender(client.key).send(h.usd.functions.approve(s.escrow.address, 600 * USD))
    s.deposit(client.key, 600 * USD)
    s.allocate(client.key, client.address, {dn.accounts["provider"].address: 600 * USD})
    signer = httpx.get(f"{base}/v1/serving/signer", params={
        "payer": client.address, "expiry": int(time.time()) + 86400}).json()
    h.sender(client.key).send(s.escrow.functions.authorizeSigner(
        signer["signer"], signer["expiry"], False, bytes.fromhex(signer["proof"][2:])))
    if relayer_allowance:
        h.sender(client.key).send(h.usd.functions.approve(dn.accounts["relayer"].address, relayer_allowance))
    api_key = "hk-" + secrets.token_hex(16)
    td = httpx.get(f"{base}/v1/api-keys/typed-data", params={
        "wallet": client.address, "api_key_hash": "0x" + keccak(text=api_key).hex(),
        "spending_cap": 900 * USD}).json()["typed_data"]
    msg = {**td["message"], "spendingCap": int(td["message"]["spendingCap"]), "nonce": int(td["message"]["nonce"])}
    sig = Account.sign_typed_data(client.key, full_message={**td, "message": msg}).signature
    r = httpx.post(f"{base}/v1/api-keys", json={"grant": td["message"], "signature": "0x" + bytes(sig).hex()})
    if r.status_code != 201:
        raise SystemExit(f"API key: {r.status_code} {r.text}")
    indexer.wait_for(h.w3.eth.block_number, timeout=60)
    end = time.monotonic() + 30
    while not httpx.get(f"{base}/v1/serving/providers").json():
        if time.monotonic() > end:
            raise SystemExit("the gateway never saw the provider's endpoint")
        time.sleep(0.2)
    return api_key


@dataclass
class BenchStack:
    """A devnet with its manifest and accounts in ``tmp``, the indexer (in this process) on SQLite
    there, the environment services started against them need, and the processes started."""

    tmp: Path
    dn: Any
    indexer: Any
    index_url: str
    base_env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, cmd: list[str], env: dict[str, str], name: str) -> Path:
        """Starts ``cmd`` with the base environment plus ``env``, output to ``tmp/<name>.log``."""
        log = self.tmp / f"{name}.log"
        self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, env={**self.base_env, **env},
                                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        return log


@contextlib.contextmanager
def bench_stack(prefix: str, stop_signal: signal.Signals = signal.SIGTERM, stop_wait_s: float = 20.0,
                ) -> Iterator[BenchStack]:
    """A :class:`BenchStack` in a new temporary folder; on the way out its processes get
    ``stop_signal`` (killed after ``stop_wait_s``), then the indexer and Anvil stop."""
    from common import accounts as accts
    from deploy.devnet import bring_up, free_port
    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    dn = bring_up(port=free_port(), write=False, anvil_log=tmp / "anvil.log")
    indexer = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        dn.manifest.save(tmp / "manifest.json")
        accts.save(dn.accounts, tmp / accts.ACCOUNTS_FILE)
        index_url = f"sqlite:///{tmp / 'indexer.db'}"
        indexer = IndexerService(IndexerSettings(database_url=index_url, poll_interval=0.2,
                                                 manifest_path=tmp / "manifest.json"), manifest=dn.manifest)
        indexer.start()
        base_env = {**os.environ, "PYTHONPATH": str(ROOT), "HEARTH_DATA_DIR": str(tmp),
                    "HEARTH_INDEXER_DATABASE_URL": index_url,
                    "HEARTH_MANIFEST": str(tmp / "manifest.json"), "PYTHONUNBUFFERED": "1"}
        st = BenchStack(tmp, dn, indexer, index_url, base_env, procs)
        yield st
    finally:
        for p in procs.values():
            p.send_signal(stop_signal)
        for p in procs.values():
            try:
                p.wait(stop_wait_s)
            except subprocess.TimeoutExpired:
                p.kill()
        if indexer is not None:
            indexer.stop()
        dn.anvil.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency, in-process and serving")
    ap.add_argument("--per-job", type=str, default="4,16,24",
                    help="per-job requests at concurrency 1,8,64 (at most 50 in all: one provider's devnet "
                         "stake holds 50 jobs until their challenge windows end)")
    ap.add_argument("--skip-per-job", action="store_true")
    ap.add_argument("--max-wait-ms", type=float, default=2.0, help="the batcher's wait, both paths")
    args = ap.parse_args()
    per_job_counts = dict(zip(CONCURRENCY, (int(x) for x in args.per_job.split(",")), strict=True))

    from deploy.devnet import free_port

    reqs = requests_for(args.requests)
    t_start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)  # other work on the machine skews every number: recorded

    with bench_stack("hearth-bench-e2e-") as st:
        dn, indexer, spawn = st.dn, st.indexer, st.spawn
        gw_port, pj_port, prov_port = free_port(), free_port(), free_port()
        gw_env = {"HEARTH_GATEWAY_RELAYER_KEY": dn.accounts["relayer"].key,
                  "HEARTH_GATEWAY_RATE_LIMIT_IP_PER_MIN": "1e12",
                  "HEARTH_GATEWAY_PROVIDER_TIMEOUT_S": "120",  # c=64 queues for seconds on a CPU
                  "HEARTH_GATEWAY_RATE_LIMIT_WALLET_PER_MIN": "1e12"}
        gw_log = spawn([sys.executable, "-m", "gateway", "run", "--port", str(gw_port), "--log-level", "warning"],
                       {**gw_env, "HEARTH_GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{gw_port}"}, "gateway")
        prov_log = spawn([sys.executable, "-m", "worker.serving"],
                         {"HEARTH_WORKER_KEY": dn.accounts["provider"].key, "HEARTH_SERVING_PORT": str(prov_port),
                          "HEARTH_SERVING_ANNOUNCE": "1", "HEARTH_SERVING_PRICE": "100",
                          "HEARTH_SERVING_REGION": "local", "HEARTH_SERVING_LOG_LEVEL": "WARNING",
                          "HEARTH_SERVING_MAX_WAIT_S": str(args.max_wait_ms / 1000)}, "provider")
        base = f"http://127.0.0.1:{gw_port}"
        wait_http(f"{base}/healthz", "gateway", gw_log)
        wait_http(f"http://127.0.0.1:{prov_port}/healthz", "provider", prov_log)

        api_key = open_serving_client(dn, base, indexer, relayer_allowance=300 * USD)  # per-job pulls

        # In-process and serving runs alternate per concurrency, so both see the same machine load.
        from worker.model import embedding_batcher
        from worker.node.compute import shared_encoder

        enc = shared_encoder("torch", "fp32", "cpu")
        in_process: dict[str, dict[str, Any]] = {}
        serving: dict[str, dict[str, Any]] = {}
        with embedding_batcher(enc, max_wait_s=args.max_wait_ms / 1000) as batcher:
            for c in CONCURRENCY:
                in_process[str(c)] = bench_in_process(reqs, c, enc, batcher)
                serving.update(bench_http(base, api_key, reqs, dict.fromkeys(CONCURRENCY, args.requests), "serving",
                                          60, only=(c,)))
        prov = f"http://127.0.0.1:{prov_port}"
        time.sleep(3)  # the last leaves reach their batch age and are cut
        end = time.monotonic() + 60
        while httpx.get(f"{prov}/v1/serving/status").json()["batches_open"] and time.monotonic() < end:
            time.sleep(0.5)
        st = httpx.get(f"{prov}/v1/serving/status").json()
        collect_gas = sum(int(v["gas"]) for v in st["vouchers"])
        batch_gas_per_job = (int(st["batch_gas"]) + collect_gas) / max(1, int(st["leaves"]))

        per_job: dict[str, dict[str, float]] = {}
        if not args.skip_per_job:
            pj_log = spawn([sys.executable, "-m", "gateway", "run", "--port", str(pj_port), "--log-level", "warning"],
                           {**gw_env, "HEARTH_GATEWAY_SERVING_MODE": "per_job",
                            "HEARTH_GATEWAY_EMBEDDINGS_TIMEOUT_S": "600"}, "gateway-per-job")
            spawn([sys.executable, "-m", "worker", "run", "--devnet-role", "verifier2", "--poll-interval", "0.2",
                   "--log-level", "WARNING"], {"HEARTH_WORKER_GATEWAY_URL": f"http://127.0.0.1:{pj_port}"},
                  "worker-per-job")
            wait_http(f"http://127.0.0.1:{pj_port}/healthz", "per-job gateway", pj_log)
            per_job = bench_http(f"http://127.0.0.1:{pj_port}", api_key, reqs, per_job_counts, "per_job", 600)

        share = 1 - serving["64"]["requests_per_s"] / in_process["64"]["requests_per_s"]
        result: dict[str, Any] = {
            "in_process": in_process, "serving": serving, "per_job": per_job,
            "protocol_overhead_share": round(share, 3),
            "p50_overhead_ms_c1": round(serving["1"]["p50_ms"] - in_process["1"]["p50_ms"], 2),
            "batch_gas_per_job": round(batch_gas_per_job, 1),
            "serving_vs_per_job_rps_c8": (round(serving["8"]["requests_per_s"] / per_job["8"]["requests_per_s"], 1)
                                          if per_job else None),
            "provider_status": {k: st[k] for k in ("leaves", "batches_committed", "batch_gas", "collected")},
            "collect_gas": collect_gas,
            "targets": {"protocol_overhead_share<=0.20": share <= 0.20,
                        "p50_overhead_ms_c1<=25": serving["1"]["p50_ms"] - in_process["1"]["p50_ms"] <= 25,
                        "serving>=100x_per_job_rps_c8": bool(per_job) and serving["8"]["requests_per_s"]
                        >= 100 * per_job["8"]["requests_per_s"]},
            "requests": args.requests, "per_job_requests": per_job_counts if per_job else None,
            "setup": "loopback on one machine: Anvil (automine), indexer in the bench process, gateway and provider "
                     "endpoint as separate processes (one uvicorn worker each), MiniLM torch fp32 on CPU; requests of "
                     "1-8 sentences of 4-24 words; aiohttp asyncio clients",
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_average_1m_at_start": load_start, "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
            "wall_s": round(time.perf_counter() - t_start, 1),
            "date": time.strftime("%Y-%m-%d"),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\n{'path':<11}{'c':>4}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'n':>7}")
        for path in ("in_process", "serving", "per_job"):
            for c, v in result[path].items():
                print(f"{path:<11}{c:>4}{v['requests_per_s']:>10}{v['p50_ms']:>10}{v['p99_ms']:>10}{v['requests']:>7}")
        print(json.dumps({k: result[k] for k in ("protocol_overhead_share", "p50_overhead_ms_c1", "batch_gas_per_job",
                                                 "serving_vs_per_job_rps_c8", "targets")}, indent=2))


if __name__ == "__main__":
    main()
