"""Transactions per key: the same per-job lifecycles sent one at a time and pipelined.

    python bench/chain.py [--jobs 200] [--block-time 1] [--out bench/results/chain.json]

A lifecycle is the relayer's ``postJobWithSig`` (a client-signed request), then the provider's
``claimJob`` and ``submitReceipt``: three transactions from two keys, each depending on the one
before. *Serial* waits for every transaction to be mined before sending the next (what
``TxSender`` did before it kept several in flight). *Pipelined* lets the relayer broadcast
every post at once and runs each job's claim and receipt in its own thread as soon as the step
before is mined, all through one ``TxSender`` per key. Both runs use the same fresh devnet with
interval mining (``--block-time`` seconds), so a block holds whatever is in the pool.

Writes ``jobs_per_s_serial``, ``jobs_per_s_pipelined`` (and their ratio) and
``txs_per_block_pipelined`` (the mean number of our transactions in each block that held any).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_utils import keccak  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402
from web3.types import TxReceipt  # noqa: E402

from contracts import eip712  # noqa: E402
from contracts.chain import PendingTx  # noqa: E402
from contracts.types import JobRequest, MarketParams, Permit, Receipt  # noqa: E402
from deploy.devnet import HST, USD, Devnet, bring_up, free_port, fund  # noqa: E402

UNITS = 1_000
GPU = b"cpu".ljust(32, b"\x00")


class Lifecycles:
    """Sends per-job lifecycles on one devnet and records every mined transaction."""

    def __init__(self, dn: Devnet, jobs: int) -> None:
        self.dn, self.h, self.acc = dn, dn.hearth, dn.accounts
        self.model_id = bytes.fromhex(dn.manifest.models[0].model_id[2:])
        self.runtime_hash = bytes.fromhex(dn.manifest.models[0].runtime_hash[2:])
        self.price = int(self.h.registry.functions.priceOf(self.model_id).call())
        self.relayer = self.h.sender(self.acc["relayer"].key)
        self.provider = self.h.sender(self.acc["provider"].key)
        self.client = self.acc["client"]
        for s in (self.relayer, self.provider):
            s.poll = 0.2  # hundreds of waiting threads: poll a few times per block, not 20
        self.mined: list[TxReceipt] = []
        owner = self.acc["deployer"].key
        # Collateral is locked per open job: stake enough for every job of both runs.
        collateral = MarketParams(*self.h.market.functions.params().call()).claim_collateral
        need = collateral * jobs * 2 + 100 * HST
        fund(self.h, owner, self.provider.address, hst=need)
        fund(self.h, owner, self.client.address, usd=jobs * 2 * self.payment + USD)
        self.provider.send(self.h.hst.functions.approve(self.h.staking.address, need))
        self.provider.send(self.h.staking.functions.stake(need))
        self.h.sender(self.client.key).send(self.h.usd.functions.approve(self.h.market.address, 2**256 - 1))

    @property
    def payment(self) -> int:
        return UNITS * self.price

    def _post(self, i: int, nonce: int) -> PendingTx:
        now = int(self.h.w3.eth.get_block("latest")["timestamp"])
        req = JobRequest(self.client.address, self.model_id, keccak(text=f"input {i}"), self.payment, now + 3600,
                         nonce)
        sig = eip712.sign_job_request(self.client.key, req, self.h.chain_id, self.h.market.address)
        fn = self.h.market.functions.postJobWithSig(req.as_tuple(), sig, Permit().as_tuple())
        return self.relayer.submit(fn)

    def _finish(self, posted: PendingTx) -> None:
        rcpt = self.relayer.wait(posted)
        job_id = self.h.job_id_from(rcpt)
        job = self.h.fold_receipt(job_id, None, rcpt)
        claimed = self.provider.wait(self.provider.submit(
            self.h.market.functions.claimJob(job_id, job.as_tuple())))
        job = self.h.fold_receipt(job_id, job, claimed)
        rec = Receipt(job_id, keccak(text=f"output {job_id}"), UNITS, self.model_id, self.runtime_hash, GPU)
        sig = eip712.sign_receipt(self.provider.account.key, rec, self.h.chain_id, self.h.market.address)
        delivered = self.provider.wait(self.provider.submit(
            self.h.market.functions.submitReceipt(job.as_tuple(), rec.as_tuple(), sig)))
        self.mined += [rcpt, claimed, delivered]

    def run(self, jobs: int, pipelined: bool, progress: Progress) -> float:
        task = progress.add_task("pipelined" if pipelined else "serial (one in flight)", total=jobs)
        nonce = int(self.h.market.functions.nonces(self.client.address).call())
        start = time.perf_counter()
        if pipelined:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(self._finish, self._post(i, nonce + i)) for i in range(jobs)]
                for f in futures:
                    f.result()
                    progress.advance(task)
        else:
            for i in range(jobs):
                self._finish(self._post(i, nonce + i))
                progress.advance(task)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--block-time", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chain.json")
    a = ap.parse_args()
    console = Console()
    with console.status("starting a devnet..."):
        dn = bring_up(port=free_port(), write=False, block_time=a.block_time)
    try:
        bench = Lifecycles(dn, a.jobs)
        with Progress(console=console) as progress:
            serial_s = bench.run(a.jobs, pipelined=False, progress=progress)
            bench.mined.clear()
            piped_s = bench.run(a.jobs, pipelined=True, progress=progress)
        per_block = Counter(int(r["blockNumber"]) for r in bench.mined)
    finally:
        dn.anvil.stop()
    serial, piped = a.jobs / serial_s, a.jobs / piped_s
    txs_per_block = sum(per_block.values()) / len(per_block)
    table = Table(title=f"{a.jobs} per-job lifecycles (post, claim, receipt) at {a.block_time:g} s blocks")
    for col in ("mode", "seconds", "jobs/s", "blocks", "txs/block"):
        table.add_column(col, justify="right")
    table.add_row("serial (one in flight)", f"{serial_s:.1f}", f"{serial:.2f}", "", "")
    table.add_row("pipelined", f"{piped_s:.1f}", f"{piped:.2f}", str(len(per_block)), f"{txs_per_block:.1f}")
    console.print(table)
    console.print(f"pipelined / serial = {piped / serial:.1f}x")
    out: dict[str, Any] = {
        "jobs": a.jobs, "block_time_s": a.block_time,
        "jobs_per_s_serial": round(serial, 3), "jobs_per_s_pipelined": round(piped, 3),
        "pipelined_over_serial": round(piped / serial, 2),
        "txs_per_block_pipelined": round(txs_per_block, 1), "blocks_pipelined": len(per_block),
        "seconds_serial": round(serial_s, 2), "seconds_pipelined": round(piped_s, 2),
        "command": " ".join(["python", *sys.argv]), "machine": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
