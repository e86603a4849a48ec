"""Indexer benchmark: backfill rate into SQLite and PostgreSQL, and the lag behind a live head.

1. Builds a chain with at least ``--events`` protocol events on its own Anvil, through the real
   contracts only: providers register, stake and serve; clients post jobs; providers claim,
   deliver (EIP-712 receipts) and get finalized; late jobs are refunded (with a collateral slash
   when they were claimed); everyone withdraws; the rest is ``setServing`` calls. Transactions
   go out as JSON-RPC batches of ``eth_sendTransaction`` from impersonated accounts with
   automine off, ``--block-txs`` per block (``anvil_mine``; default 100, a busy but plausible
   block), so building is bounded by Anvil's execution rather than by Python signing.
2. Backfills a fresh database of each kind from the deployment block to the head and reports
   events per second (wall time of ``Indexer.sync``, including RPC, decoding and writes).
3. Switches Anvil to one block per second, keeps posting jobs, runs the indexer service
   (poll 0.25 s) and samples head minus indexed block every 50 ms: ``realtime_lag_blocks`` is
   the largest sample.

Writes ``bench/results/indexer.json`` and prints a table. PostgreSQL: a fresh database
``hearth_idx_bench_<random>`` on ``--pg-host``/``--pg-port`` (user postgres or root), dropped at
the end; ``--no-postgres`` skips it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from multiprocessing import Pool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "indexer.json"

from eth_abi.abi import encode  # noqa: E402
from eth_utils.address import to_checksum_address  # noqa: E402
from eth_utils.crypto import keccak  # noqa: E402

HST = 10**18
MAX_UINT = 2**256 - 1
JOB_TYPE = ("(address,address,bytes32,bytes32,uint96,uint96,uint96,uint96,uint40,uint40,uint8,bytes32,"
            "uint64,bytes32,address,uint16,uint40)")
GPU = b"h100".ljust(32, b"\x00")
RECEIPT_TYPE = "(uint256,bytes32,uint64,bytes32,bytes32,bytes32)"
RECEIPT_TYPEHASH = keccak(text="Receipt(uint256 jobId,bytes32 outputHash,uint64 units,bytes32 modelHash,"
                               "bytes32 runtimeHash,bytes32 gpuClass)")
ZERO = "0x" + "00" * 20
Z32 = b"\x00" * 32
log = logging.getLogger("bench.indexer")


def selector(sig: str) -> bytes:
    return keccak(text=sig)[:4]


def call(sig: str, types: Sequence[str], args: Sequence[Any]) -> str:
    return "0x" + (selector(sig) + encode(list(types), list(args))).hex()


def job_tuple(j: dict[str, Any], status: int) -> tuple[Any, ...]:
    """The job record as the market stores it in ``status`` (1 posted, 2 claimed, 3 delivered)."""
    claimed, delivered = status >= 2, status >= 3
    return (j["client"], j["provider"] if claimed else ZERO, j["model"], j["input"], j["max"],
            j["price"], j["payment"] if delivered else 0, j["collateral"] if claimed else 0,
            j["deadline"], j["challenge_end"] if delivered else j["window"], status,
            j["output"] if delivered else Z32, 100 if delivered else 0, GPU if delivered else Z32,
            j["treasury"], j["fee_bps"], j["claim_expiry"] if claimed else 0)


def _sign(args: tuple[bytes, bytes]) -> bytes:
    from eth_keys.datatypes import PrivateKey

    key, digest = args
    sig = PrivateKey(key).sign_msg_hash(digest)
    return bytes(sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27]))


class ChainBuilder:
    """Drives Anvil with batched, unsigned transactions from impersonated accounts."""

    def __init__(self, dn: Any, block_txs: int) -> None:
        from indexer.rpc import Rpc

        self.dn = dn
        self.h = dn.hearth
        self.rpc = Rpc(dn.anvil.rpc_url, timeout=600)
        self.block_txs = block_txs
        self.nonces: dict[str, int] = {}
        self.pending: list[dict[str, Any]] = []
        self.txs = 0
        self.model = bytes.fromhex(dn.manifest.models[0].model_id[2:])
        self.runtime = bytes.fromhex(dn.manifest.models[0].runtime_hash[2:])
        m = dn.manifest.contracts
        self.market, self.staking = m["JobMarket"].address, m["Staking"].address
        self.usd, self.hst = m["HearthUSD"].address, m["HearthStake"].address

    def setup_node(self) -> None:
        self.rpc.call("anvil_autoImpersonateAccount", [True])
        self.rpc.call("evm_setBlockGasLimit", [hex(2_000_000_000)])
        self.rpc.call("evm_setAutomine", [False])

    def fund(self, addresses: Iterable[str]) -> None:
        for a in addresses:
            self.rpc.call("anvil_setBalance", [a, hex(10**24)])

    def tx(self, sender: str, to: str, data: str, gas: int = 400_000) -> None:
        if sender not in self.nonces:
            self.nonces[sender] = int(self.rpc.call("eth_getTransactionCount", [sender, "pending"]), 16)
        nonce = self.nonces[sender]
        self.nonces[sender] = nonce + 1
        self.pending.append({"from": sender, "to": to, "data": data, "gas": hex(gas),
                             "nonce": hex(nonce), "maxFeePerGas": hex(50 * 10**9),
                             "maxPriorityFeePerGas": hex(10**9)})
        if len(self.pending) >= self.block_txs:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self.pending), 500):
            part = self.pending[i:i + 500]
            self.rpc.batch([("eth_sendTransaction", [t]) for t in part])
        self.txs += len(self.pending)
        if self.pending:
            self.rpc.call("anvil_mine", ["0x1"])
        self.pending = []
        if int(self.rpc.call("txpool_status")["pending"], 16):
            raise RuntimeError("transactions left in the pool: raise the block gas limit")

    def explain(self, sender: str, to: str, data: str) -> str:
        """Why a call would revert (decoded custom error), for diagnostics."""
        from indexer.errors import RpcError

        try:
            self.rpc.call("eth_call", [{"from": sender, "to": to, "data": data}, "latest"])
            return "ok"
        except RpcError as exc:
            return str(exc)

    def logs(self, address: str, topic0: bytes, first: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        head = self.rpc.block_number()
        step = 2000
        for frm in range(first, head + 1, step):
            out += self.rpc.call("eth_getLogs", [{
                "address": address, "fromBlock": hex(frm), "toBlock": hex(min(head, frm + step - 1)),
                "topics": ["0x" + topic0.hex()]}])
        return out

    def advance(self, seconds: int) -> None:
        self.rpc.call("evm_increaseTime", [seconds])
        self.rpc.call("anvil_mine", ["0x1"])

    def now(self) -> int:
        return int(self.rpc.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


def build_chain(dn: Any, target_events: int, block_txs: int, providers: int = 16,
                clients: int = 8) -> dict[str, Any]:
    """Fills the chain with at least ``target_events`` protocol events; returns counts."""
    t0 = time.monotonic()
    b = ChainBuilder(dn, block_txs)
    b.setup_node()
    owner = dn.accounts["deployer"].address
    pkeys = [keccak(text=f"hearth bench provider {i}") for i in range(providers)]
    from eth_keys.datatypes import PrivateKey

    paddrs = [to_checksum_address(PrivateKey(k).public_key.to_address()) for k in pkeys]
    caddrs = [to_checksum_address(keccak(text=f"hearth bench client {i}")[12:]) for i in range(clients)]
    b.fund(paddrs + caddrs + [owner])

    # The mix: F full lifecycles (4 events), R claimed-then-refunded (JobPosted, JobClaimed,
    # JobRefunded, Slashed), U posted-then-refunded (2), withdrawals, then setServing calls.
    unit = max(1, target_events // 100)
    full, refunded_claimed, refunded_posted = 3 * unit, 18 * unit, 3 * unit
    stake = 20_000 * HST
    for p in paddrs:
        b.tx(owner, b.hst, call("mint(address,uint256)", ["address", "uint256"], [p, stake]))
    for c in caddrs:
        b.tx(owner, b.usd, call("mint(address,uint256)", ["address", "uint256"], [c, 10**15]))
    b.flush()  # across senders, order within a block is not guaranteed: mint first
    for p in paddrs:
        b.tx(p, b.hst, call("approve(address,uint256)", ["address", "uint256"], [b.staking, MAX_UINT]))
        b.tx(p, b.staking, call("register(string,string,string,uint256)", ["string"] * 3 + ["uint256"],
                                [f"https://{p[2:10].lower()}.example", "eu", "h100", stake]))
        b.tx(p, b.staking, call("setServing(bytes32,bool)", ["bytes32", "bool"], [b.model, True]))
    for c in caddrs:
        b.tx(c, b.usd, call("approve(address,uint256)", ["address", "uint256"], [b.market, MAX_UINT]))
    b.flush()

    # posts
    now = b.now()
    first_block = b.rpc.block_number() + 1
    total = full + refunded_claimed + refunded_posted
    jobs: list[dict[str, Any]] = []
    for i in range(total):
        j: dict[str, Any] = {"client": caddrs[i % clients], "model": b.model, "input": keccak(text=f"input {i}"),
             "max": 1_000 + i % 997, "deadline": now + (30 * 86_400 if i < full else 3_600)}
        jobs.append(j)
        b.tx(j["client"], b.market, call("postJob(bytes32,bytes32,uint96,uint40)",
                                         ["bytes32", "bytes32", "uint96", "uint40"],
                                         [j["model"], j["input"], j["max"], j["deadline"]]), 300_000)
    b.flush()
    posted = b.logs(b.market, keccak(
        text="JobPosted(uint256,address,bytes32,bytes32,uint96,uint96,uint40,address,address,uint16,uint32)"),
        first_block)
    by_input = {bytes.fromhex(lg["data"][2:66]): lg for lg in posted}
    for j in jobs:
        lg = by_input[j["input"]]
        j["id"] = int(lg["topics"][1], 16)
        j["price"] = int(lg["data"][2 + 64 * 2:2 + 64 * 3], 16)
        j["treasury"] = to_checksum_address("0x" + lg["data"][2 + 64 * 5 + 24:2 + 64 * 6])
        j["fee_bps"] = int(lg["data"][2 + 64 * 6:2 + 64 * 7], 16)
        j["window"] = int(lg["data"][2 + 64 * 7:2 + 64 * 8], 16)
    log.info("posted %d jobs (%.0fs)", len(jobs), time.monotonic() - t0)

    # claims
    first_claim = b.rpc.block_number() + 1
    for i, j in enumerate(jobs[:full + refunded_claimed]):
        posted_record = job_tuple(j, 1)
        j["provider"], j["pkey"] = paddrs[i % providers], pkeys[i % providers]
        b.tx(j["provider"], b.market, call(f"claimJob(uint256,{JOB_TYPE})", ["uint256", JOB_TYPE],
                                           [j["id"], posted_record]), 300_000)
    b.flush()
    claimed = b.logs(b.market, keccak(text="JobClaimed(uint256,address,uint96,uint40)"), first_claim)
    for lg in claimed:  # collateral scales with the job; the claim's expiry is part of the record
        j = next(x for x in jobs if x.get("id") == int(lg["topics"][1], 16))
        j["collateral"] = int(lg["data"][2:66], 16)
        j["claim_expiry"] = int(lg["data"][66:130], 16)
    if len(claimed) != full + refunded_claimed:
        ok = {int(lg["topics"][1], 16) for lg in claimed}
        j = next(j for j in jobs[:full + refunded_claimed] if j["id"] not in ok)
        posted_record = job_tuple(j, 1)
        why = b.explain(j["provider"], b.market, call(
            f"claimJob(uint256,{JOB_TYPE})", ["uint256", JOB_TYPE], [j["id"], posted_record]))
        raise RuntimeError(f"{len(claimed)} of {full + refunded_claimed} claims: {why}")
    log.info("claimed (%.0fs)", time.monotonic() - t0)

    # receipts, signed in a process pool
    ds = bytes(dn.hearth.market.functions.DOMAIN_SEPARATOR().call())
    gpu = GPU
    digests = []
    for j in jobs[:full]:
        j["output"] = keccak(j["input"])
        struct = keccak(encode(["bytes32", "uint256", "bytes32", "uint64", "bytes32", "bytes32", "bytes32"],
                               [RECEIPT_TYPEHASH, j["id"], j["output"], 100, b.model, b.runtime, gpu]))
        digests.append((j["pkey"], keccak(b"\x19\x01" + ds + struct)))
    with Pool(os.cpu_count() or 1) as pool:
        sigs = pool.map(_sign, digests, chunksize=64)
    log.info("signed %d receipts (%.0fs)", len(sigs), time.monotonic() - t0)
    first_block = b.rpc.block_number() + 1
    for j, sig in zip(jobs[:full], sigs, strict=True):
        receipt = (j["id"], j["output"], 100, b.model, b.runtime, gpu)
        b.tx(j["provider"], b.market, call(f"submitReceipt({JOB_TYPE},{RECEIPT_TYPE},bytes)",
                                           [JOB_TYPE, RECEIPT_TYPE, "bytes"],
                                           [job_tuple(j, 2), receipt, sig]), 300_000)
    b.flush()
    receipt_topic = keccak(
        text="ReceiptSubmitted(uint256,address,bytes32,uint64,bytes32,bytes32,bytes32,uint96,uint40)")
    delivered = b.logs(b.market, receipt_topic, first_block)
    by_id = {int(lg["topics"][1], 16): lg for lg in delivered}
    if len(by_id) != full:
        j = next(j for j in jobs[:full] if j["id"] not in by_id)
        receipt = (j["id"], j["output"], 100, b.model, b.runtime, gpu)
        why = b.explain(j["provider"], b.market, call(
            f"submitReceipt({JOB_TYPE},{RECEIPT_TYPE},bytes)", [JOB_TYPE, RECEIPT_TYPE, "bytes"],
            [job_tuple(j, 2), receipt, sigs[jobs.index(j)]]))
        raise RuntimeError(f"{full - len(by_id)} receipts failed, e.g. job {j['id']}: {why}")
    for j in jobs[:full]:
        data = by_id[j["id"]]["data"][2:]
        j["payment"] = int(data[64 * 5:64 * 6], 16)
        j["challenge_end"] = int(data[64 * 6:64 * 7], 16)
    log.info("delivered (%.0fs)", time.monotonic() - t0)

    # settlement: finalize the delivered, refund the late (claimed ones lose a penalty)
    b.advance(3_601)
    relayer = dn.accounts["relayer"].address
    b.fund([relayer])
    for j in jobs[:full]:
        b.tx(relayer, b.market, call(f"finalize(uint256,{JOB_TYPE})", ["uint256", JOB_TYPE],
                                     [j["id"], job_tuple(j, 3)]), 300_000)
    for j in jobs[full:full + refunded_claimed]:
        b.tx(relayer, b.market, call(f"refund(uint256,{JOB_TYPE})", ["uint256", JOB_TYPE],
                                     [j["id"], job_tuple(j, 2)]), 300_000)
    for j in jobs[full + refunded_claimed:]:
        b.tx(relayer, b.market, call(f"refund(uint256,{JOB_TYPE})", ["uint256", JOB_TYPE],
                                     [j["id"], job_tuple(j, 1)]), 300_000)
    b.flush()
    treasury = dn.accounts["treasury"].address
    b.fund([treasury])
    for a in [*caddrs, *paddrs, treasury]:
        b.tx(a, b.market, call("withdraw(address)", ["address"], [a]))
    b.flush()
    log.info("settled (%.0fs)", time.monotonic() - t0)

    # fill up with setServing (each a new provider/model row)
    have = count_events(dn)
    for k in range(max(0, target_events - have)):
        p = paddrs[k % providers]
        b.tx(p, b.staking, call("setServing(bytes32,bool)", ["bytes32", "bool"],
                                [keccak(text=f"model {k}"), True]), 100_000)
    b.flush()
    b.rpc.call("evm_setAutomine", [True])
    events = count_events(dn)
    return {"events": events, "transactions": b.txs, "blocks": b.rpc.block_number(),
            "jobs": len(jobs), "build_seconds": round(time.monotonic() - t0, 1)}


def count_events(dn: Any) -> int:
    from indexer.decode import PROTOCOL_CONTRACTS
    from indexer.rpc import Rpc

    rpc = Rpc(dn.anvil.rpc_url, timeout=600)
    addrs = [dn.manifest.contracts[n].address for n in PROTOCOL_CONTRACTS]
    head = rpc.block_number()
    n = 0
    for frm in range(dn.manifest.deployment_block, head + 1, 500):
        n += len(rpc.get_logs(addrs, frm, min(head, frm + 499)))
    return n


def backfill(dn: Any, url: str) -> dict[str, Any]:
    from common.db import make_engine
    from indexer.settings import IndexerSettings
    from indexer.sync import Indexer

    engine = make_engine(url)
    ix = Indexer(IndexerSettings(database_url=url), manifest=dn.manifest, engine=engine)
    ix.prepare()
    t0 = time.monotonic()
    ix.sync(timeout=3600)
    dt = time.monotonic() - t0
    import sqlalchemy as sa

    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM raw_events")).scalar() or 0
    ix.close()
    engine.dispose()
    return {"events": n, "seconds": round(dt, 2), "events_per_s": round(n / dt)}


def realtime(dn: Any, url: str, seconds: float) -> dict[str, Any]:
    """Follows a 1 s block time devnet under load; samples head - indexed every 50 ms."""
    from common.db import make_engine
    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    svc = IndexerService(IndexerSettings(database_url=url, poll_interval=0.25),
                         manifest=dn.manifest, engine=make_engine(url))
    b = ChainBuilder(dn, block_txs=10**9)
    client = dn.accounts["client"].address
    b.tx(client, b.usd, call("approve(address,uint256)", ["address", "uint256"], [b.market, MAX_UINT]))
    b.rpc.batch([("eth_sendTransaction", [t]) for t in b.pending])
    b.pending = []
    b.rpc.call("anvil_mine", ["0x1"])
    svc.start()
    svc.wait_for(b.rpc.block_number(), timeout=600)
    b.rpc.call("evm_setIntervalMining", [1])
    stop = threading.Event()
    now = b.now()

    def load() -> None:
        i = 0
        while not stop.wait(0.1):  # ~10 jobs per block
            b.tx(client, b.market, call("postJob(bytes32,bytes32,uint96,uint40)",
                                        ["bytes32", "bytes32", "uint96", "uint40"],
                                        [b.model, secrets.token_bytes(32), 1_000, now + 86_400]))
            b.rpc.batch([("eth_sendTransaction", [t]) for t in b.pending])
            b.pending = []
            i += 1

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    lags: list[int] = []
    seen: dict[int, float] = {}
    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        head = b.rpc.block_number()
        t = time.monotonic()
        seen.setdefault(head, t)
        cp = svc.indexer.cp
        indexed = cp.block_number if cp else 0
        lags.append(head - indexed)
        for n in [n for n in seen if n <= indexed]:
            latencies.append(t - seen.pop(n))
        time.sleep(0.05)
    stop.set()
    loader.join()
    svc.stop()
    svc.close()
    b.rpc.call("evm_setAutomine", [True])
    lat_sorted = sorted(latencies)
    return {
        "max_lag_blocks": max(lags), "mean_lag_blocks": round(statistics.mean(lags), 3),
        "samples": len(lags), "seconds": seconds, "block_time_s": 1,
        "index_latency_p50_s": round(lat_sorted[len(lat_sorted) // 2], 3) if lat_sorted else None,
        "index_latency_max_s": round(lat_sorted[-1], 3) if lat_sorted else None,
    }


def pg_database(host: str, port: int) -> tuple[str, Any]:
    import psycopg

    last: Exception | None = None
    for user in ("postgres", "root"):
        try:
            admin = psycopg.connect(host=host, port=port, user=user, dbname="postgres",
                                    autocommit=True, connect_timeout=5)
            break
        except Exception as exc:  # noqa: BLE001 - try the next user
            last = exc
    else:
        raise SystemExit(f"PostgreSQL at {host}:{port} is not reachable: {last}")
    name = f"hearth_idx_bench_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"postgresql+psycopg://{user}@{host}:{port}/{name}", drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--block-txs", type=int, default=100)
    ap.add_argument("--realtime-seconds", type=float, default=30.0)
    ap.add_argument("--pg-host", default="127.0.0.1")
    ap.add_argument("--pg-port", type=int, default=5432)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "indexer", "deploy", "contracts", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from rich.console import Console
    from rich.table import Table

    from deploy.devnet import bring_up, free_port

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        dn = bring_up(port=free_port(), write=False, anvil_log=Path(tmp) / "anvil.log")
        try:
            with console.status(f"building a chain with {args.events} protocol events..."):
                built = build_chain(dn, args.events, args.block_txs)
            console.print(f"built: {built}")
            rates: dict[str, Any] = {}
            sqlite_url = f"sqlite:///{Path(tmp) / 'indexer.db'}"
            with console.status("backfilling SQLite..."):
                rates["sqlite"] = backfill(dn, sqlite_url)
            console.print(f"sqlite: {rates['sqlite']}")
            if not args.no_postgres:
                url, drop = pg_database(args.pg_host, args.pg_port)
                try:
                    with console.status("backfilling PostgreSQL..."):
                        rates["postgresql"] = backfill(dn, url)
                    console.print(f"postgresql: {rates['postgresql']}")
                finally:
                    drop()
            with console.status(f"following a 1 s block time head for {args.realtime_seconds:.0f}s..."):
                rt = realtime(dn, sqlite_url, args.realtime_seconds)
        finally:
            dn.anvil.stop()

    result = {
        "command": " ".join(["python bench/indexer.py", *sys.argv[1:]]),
        "event_count": built["events"],
        "chain": built,
        "backfill_events_per_s": {k: v["events_per_s"] for k, v in rates.items()},
        "backfill_seconds": {k: v["seconds"] for k, v in rates.items()},
        "realtime_lag_blocks": rt["max_lag_blocks"],
        "realtime": rt,
        "setup": "own Anvil (bring_up), protocol contracts only (JobMarket, Staking, ModelRegistry); "
                 "backfill = Indexer.sync from the deployment block into an empty database, "
                 "default settings (adaptive eth_getLogs ranges, target 10k logs per batch); "
                 "realtime = IndexerService (poll 0.25 s, SQLite) on interval mining 1 s with ~10 "
                 "postJob per block; lag = head - indexed block sampled every 50 ms; latency = from "
                 "the sampler first seeing a block to the index including it",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title=f"Hearth indexer ({built['events']:,} events, {built['transactions']:,} txs, "
                        f"{built['blocks']:,} blocks)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in rates.items():
        table.add_row(f"backfill {k}", f"{v['events_per_s']:,} events/s ({v['seconds']} s)")
    table.add_row("realtime lag (max)", f"{rt['max_lag_blocks']} blocks")
    table.add_row("realtime lag (mean)", f"{rt['mean_lag_blocks']} blocks")
    table.add_row("block -> indexed p50 / max", f"{rt['index_latency_p50_s']} s / {rt['index_latency_max_s']} s")
    table.add_row("chain build", f"{built['build_seconds']} s")
    console.print(table)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
