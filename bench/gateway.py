"""Gateway benchmark: requests/s and p50/p99 latency of ``GET /v1/jobs/{id}`` and
``POST /v1/jobs`` on this machine, loopback only, bounded loops.

Brings up its own devnet (Anvil, automine), the indexer in this process on a SQLite file, and
the gateway as a child process (``python -m gateway run``, one uvicorn worker), then:

* POST: ``--posts`` client-signed jobs in sequence (one wallet's nonces are sequential), each
  checked and relayed with ``postJobWithSig`` and mined before the answer: the number is
  dominated by the chain round trips (a dozen RPC calls and one mined transaction per job);
* GET: ``--gets`` job reads with ``--concurrency`` requests in flight (httpx, asyncio), ids
  drawn from the posted jobs, answered from the index.

Writes ``bench/results/gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "gateway.json"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def signed_job(dn: Any, role: str, nonce: int, deadline: int, i: int) -> dict[str, Any]:
    from eth_utils import keccak

    from contracts import eip712
    from contracts.jobio import encode_input
    from contracts.types import JobRequest

    h = dn.hearth
    client = dn.accounts[role].address
    data = encode_input([f"benchmark sentence number {i}"])
    model = bytes.fromhex(dn.manifest.models[0].model_id[2:])
    req = JobRequest(client, model, keccak(data), 10**6, deadline, nonce)
    sig = eip712.sign_job_request(dn.accounts[role].key, req, h.chain_id, h.market.address)
    return {"request": {"client": client, "modelId": "0x" + model.hex(), "inputHash": "0x" + keccak(data).hex(),
                        "maxPayment": req.max_payment, "deadline": deadline, "nonce": nonce},
            "signature": "0x" + sig.hex(), "input": data.decode()}


async def get_loop(base: str, ids: list[int], total: int, concurrency: int) -> tuple[list[float], float]:
    lat: list[float] = []
    rng = random.Random(7)
    todo = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as c:
        for _ in range(50):  # warm up
            (await c.get(f"/v1/jobs/{ids[0]}")).raise_for_status()

        async def worker() -> None:
            for _ in todo:
                jid = rng.choice(ids)
                t0 = time.perf_counter()
                r = await c.get(f"/v1/jobs/{jid}")
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"GET /v1/jobs/{jid}: {r.status_code} {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return lat, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=60)
    ap.add_argument("--gets", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    from common import accounts as accts
    from deploy.devnet import bring_up, free_port
    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    tmp = Path(tempfile.mkdtemp(prefix="hearth-bench-gateway-"))
    dn = bring_up(port=free_port(), write=False, anvil_log=tmp / "anvil.log")
    gw: subprocess.Popen[bytes] | None = None
    indexer = None
    try:
        dn.manifest.save(tmp / "manifest.json")
        accts.save(dn.accounts, tmp / "devnet-accounts.json")
        index_url = f"sqlite:///{tmp / 'indexer.db'}"
        indexer = IndexerService(IndexerSettings(database_url=index_url, poll_interval=0.05,
                                                 manifest_path=tmp / "manifest.json"), manifest=dn.manifest)
        indexer.start()
        port = free_port()
        env = {**os.environ, "HEARTH_DATA_DIR": str(tmp), "HEARTH_INDEXER_DATABASE_URL": index_url,
               "HEARTH_GATEWAY_RELAYER_KEY": dn.accounts["relayer"].key, "HEARTH_GATEWAY_RATE_LIMIT_IP_PER_MIN": "1e12",
               "HEARTH_GATEWAY_RATE_LIMIT_WALLET_PER_MIN": "1e12", "PYTHONUNBUFFERED": "1"}
        gw = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--port", str(port), "--log-level", "warning"],
                              cwd=ROOT, env=env, stdout=open(tmp / "gateway.log", "wb"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        http = httpx.Client(base_url=base, timeout=60)
        for _ in range(300):
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"gateway did not start; see {tmp / 'gateway.log'}")

        h = dn.hearth
        h.sender(dn.accounts["client"].key).send(h.usd.functions.approve(h.market.address, 10**15))
        deadline = int(h.w3.eth.get_block("latest")["timestamp"]) + 3600
        nonce = h.market.functions.nonces(dn.accounts["client"].address).call()
        bodies = [signed_job(dn, "client", nonce + i, deadline, i) for i in range(args.posts)]
        http.get("/v1/models")  # warm up
        post_lat: list[float] = []
        ids: list[int] = []
        txs: list[str] = []
        t0 = time.perf_counter()
        for body in bodies:
            t = time.perf_counter()
            r = http.post("/v1/jobs", json=body)
            post_lat.append(time.perf_counter() - t)
            if r.status_code != 202:
                raise SystemExit(f"POST /v1/jobs: {r.status_code} {r.text[:300]}")
            txs.append(r.json()["tx_hash"])
        for tx in txs:  # 202 means broadcast: the posting time counts until every relay is mined
            while (relay := http.get(f"/v1/relays/{tx}").json())["status"] == "pending":
                time.sleep(0.02)
            if relay["status"] != "mined":
                raise SystemExit(f"relay {tx}: {relay}")
            ids.append(int(relay["job_id"]))
        post_wall = time.perf_counter() - t0
        indexer.wait_for(h.w3.eth.block_number, timeout=60)

        get_lat, get_wall = asyncio.run(get_loop(base, ids, args.gets, args.concurrency))
        result = {
            "get_job_rps": round(args.gets / get_wall, 1),
            "get_job_p50_ms": round(1000 * pct(get_lat, 0.50), 2),
            "get_job_p99_ms": round(1000 * pct(get_lat, 0.99), 2),
            "get_job_requests": args.gets,
            "get_job_concurrency": args.concurrency,
            "post_job_rps": round(args.posts / post_wall, 2),
            "post_job_p50_ms": round(1000 * pct(post_lat, 0.50), 1),
            "post_job_p99_ms": round(1000 * pct(post_lat, 0.99), 1),
            "post_job_requests": args.posts,
            "post_job_mean_ms": round(1000 * statistics.mean(post_lat), 1),
            "setup": "loopback; devnet Anvil (automine), indexer in the bench process (SQLite), gateway as one "
                     "uvicorn process; POST sequential from one wallet (each relayed and mined before the answer), "
                     "GET with httpx asyncio clients",
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "date": time.strftime("%Y-%m-%d"),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        http.close()
    finally:
        if gw is not None:
            gw.terminate()
            try:
                gw.wait(15)
            except subprocess.TimeoutExpired:
                gw.kill()
        if indexer is not None:
            indexer.stop()
        dn.anvil.stop()


if __name__ == "__main__":
    main()
