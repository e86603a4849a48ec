"""Gas of batched settlement per request, on a fresh devnet; merges its keys into gas.json.

    python bench/gas_batch.py [--out bench/results/gas.json]

A batch of N requests costs one ``commitBatch`` plus one ``collect`` transaction that redeems
the batch's vouchers (one voucher when one payer sent all N requests, ten when ten payers
shared them). Gas per request = (gasUsed of the commit + gasUsed of the collect) / N, every
transaction counted with its 21,000 base and calldata. Measured in the steady state: each
configuration runs twice and the second round is recorded (lanes, collected counters, the
provider's token balance and stake lock already non-zero, as for a provider in service).

Also measured: a leaf challenge on a tree of 1,024 leaves (depth 10) and the other leaf steps.

Keys written (others in the file are kept): ``batch_gas_per_job`` (one voucher per batch, by
batch size), ``batch_gas_per_job_ten_vouchers``, ``batch_steps`` and ``batch_checks``. The
script exits 1 unless ``batch_gas_per_job["1000"] <= 500`` and ``batch_gas_per_job["1"] <
per_job_lifecycle_gas`` (read from the same file, written by ``bench/gas.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_account import Account  # noqa: E402
from eth_utils import keccak  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from contracts.bindings import vote_commitment  # noqa: E402
from contracts.settlement import (  # noqa: E402
    Settlement,
    SettlementParams,
    Voucher,
    WorkReceipt,
    sign_voucher,
)
from deploy.devnet import Devnet, bring_up, free_port  # noqa: E402

SIZES = (1, 10, 100, 1000)
UNITS = 1_000
NUMERICS = b"cpu-fp32".ljust(32, b"\x00")
LIMIT_PER_REQUEST_AT_1000 = 500
USD = 10**6


class BatchBench:
    def __init__(self, dn: Devnet) -> None:
        self.dn = dn
        self.h = dn.hearth
        self.s = Settlement(self.h)
        self.acc = dn.accounts
        self.model_id = bytes.fromhex(dn.manifest.models[0].model_id[2:])
        self.runtime_hash = bytes.fromhex(dn.manifest.models[0].runtime_hash[2:])
        self.price = int(self.h.registry.functions.priceOf(self.model_id).call())
        self.provider = self.acc["provider"]
        self.payers = [Account.from_key(keccak(text=f"bench payer {i}")) for i in range(10)]
        self.cumulative: dict[str, int] = {}
        self.request = 0
        self.steps: dict[str, int] = {}

    def rpc(self, method: str, params: list[Any]) -> None:
        resp = self.h.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")

    def setup(self) -> None:
        owner = self.acc["deployer"].key
        lane = 10**6 * USD
        for p in self.payers:
            self.rpc("anvil_setBalance", [p.address, hex(10**20)])
            self.h.sender(owner).send(self.h.usd.functions.mint(p.address, lane))
            key = "0x" + bytes(p.key).hex()
            self.s.approve(key, lane)
            self.h.sender(key).send(self.s.escrow.functions.depositAndAllocate([self.provider.address], [lane]))
            self.cumulative[p.address] = 0

    def work(self, n: int, payers: int) -> list[WorkReceipt]:
        out = []
        for i in range(n):
            self.request += 1
            payer = self.payers[i % payers].address
            out.append(WorkReceipt(keccak(text=f"bench request {self.request}"), payer, self.model_id,
                                   keccak(text=f"in {self.request}"), keccak(text=f"out {self.request}"), UNITS,
                                   UNITS * self.price, self.runtime_hash, NUMERICS))
        return out

    def round(self, n: int, payers: int) -> tuple[int, int]:
        """One batch of n requests over ``payers`` payers: (commit gas, collect gas)."""
        receipts = self.work(n, payers)
        wb = self.s.work_batch(receipts)
        _, _, c_rcpt = self.s.commit(self.provider.key, wb)
        by_payer: dict[str, int] = {}
        for r in receipts:
            by_payer[r.payer] = by_payer.get(r.payer, 0) + r.value
        vouchers = []
        for p in self.payers[:payers]:
            if p.address not in by_payer:
                continue
            self.cumulative[p.address] += by_payer[p.address]
            v = Voucher(p.address, self.provider.address, self.cumulative[p.address], 0)
            vouchers.append(sign_voucher(p.key, v, self.h.chain_id, self.s.escrow.address))
        k_rcpt = self.s.collect(self.provider.key, vouchers)
        return int(c_rcpt["gasUsed"]), int(k_rcpt["gasUsed"])

    def per_request(self, n: int, payers: int) -> tuple[float, int, int]:
        self.round(n, payers)  # warm-up: first-time storage writes
        commit, collect = self.round(n, payers)
        return (commit + collect) / n, commit, collect

    def leaf_steps(self) -> None:
        """Leaf demand, reveal, challenge and fraud at depth 10 (1,024 leaves)."""
        s, h = self.s, self.h
        verifier = self.acc["verifier"]
        params = SettlementParams(*s.batches.functions.params().call())
        s.h.sender(verifier.key).send(h.usd.functions.approve(s.batches.address, 10 * params.demand_bond))
        receipts = self.work(1024, 10)
        wb = s.work_batch(receipts)
        assert wb.tree.depth == 10
        batch_id, batch, _ = s.commit(self.provider.key, wb)
        rcpt = s.demand_leaf(verifier.key, batch_id, batch, 7)
        self.steps["demandLeaf"] = int(rcpt["gasUsed"])
        rcpt = s.reveal_leaf(self.provider.key, batch_id, batch, 7, receipts[7], wb.proof(7))
        self.steps["revealLeaf (depth 10)"] = int(rcpt["gasUsed"])
        rcpt = s.challenge_leaf(verifier.key, batch_id, batch, 513, receipts[513], wb.proof(513))
        self.steps["challengeLeaf (depth 10)"] = int(rcpt["gasUsed"])
        # The shared dispute game on the leaf: draw, every member votes another output, resolve.
        b = s.batches.functions
        rpc = h.w3.provider.make_request
        rpc("anvil_mine", ["0x3"])  # type: ignore[arg-type]
        rcpt = h.sender(verifier.key).send(b.drawLeafCommittee(batch_id, 513))
        self.steps["drawLeafCommittee"] = int(rcpt["gasUsed"])
        by_addr = {a.address.lower(): a for a in self.acc.values()}
        members = list(dict.fromkeys(by_addr[a.lower()] for a in b.leafCommittee(batch_id, 513).call()))
        did, honest, units, salt = batch_id << 32 | 513, keccak(text="honest"), receipts[513].units, keccak(text="s")
        for i, m in enumerate(members):
            rcpt = h.sender(m.key).send(b.commitLeafVote(batch_id, 513, vote_commitment(
                did, m.address, honest, units, salt)))
            if i == 0:
                self.steps["commitLeafVote"] = int(rcpt["gasUsed"])
        d = b.leafDispute(batch_id, 513).call()
        now = int(h.w3.eth.get_block("latest")["timestamp"])
        rpc("evm_increaseTime", [int(d[6]) - now])  # type: ignore[arg-type]
        for i, m in enumerate(members):
            rcpt = h.sender(m.key).send(b.revealLeafVote(batch_id, 513, honest, units, salt))
            if i == 0:
                self.steps["revealLeafVote"] = int(rcpt["gasUsed"])
        now = int(h.w3.eth.get_block("latest")["timestamp"])
        rpc("evm_increaseTime", [int(d[7]) - now])  # type: ignore[arg-type]
        rcpt = h.sender(verifier.key).send(b.resolveLeafDispute(batch_id, batch.as_tuple(), 513))
        self.steps["resolveLeafDispute (fraud: slash, refund, shares)"] = int(rcpt["gasUsed"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gas.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    dn = bring_up(port=free_port(), write=False)
    try:
        b = BatchBench(dn)
        b.setup()
        one: dict[str, float] = {}
        ten: dict[str, float] = {}
        table = Table(title="batched settlement gas per request (commit + collect)")
        for col in ("batch size", "vouchers", "commitBatch", "collect", "gas / request"):
            table.add_column(col, justify="right")
        for n in SIZES:
            per, commit, collect = b.per_request(n, 1)
            one[str(n)] = round(per, 1)
            table.add_row(str(n), "1", f"{commit:,}", f"{collect:,}", f"{per:,.1f}")
            b.steps[f"commitBatch ({n})"] = commit
            b.steps["collect (1 voucher)"] = collect
            if n >= 10:
                per, commit, collect = b.per_request(n, 10)
                ten[str(n)] = round(per, 1)
                table.add_row(str(n), "10", f"{commit:,}", f"{collect:,}", f"{per:,.1f}")
                b.steps["collect (10 vouchers)"] = collect
        b.leaf_steps()
    finally:
        dn.anvil.stop()
    console.print(table)
    steps = Table(title="leaf steps")
    steps.add_column("step")
    steps.add_column("gas", justify="right")
    for k, v in b.steps.items():
        steps.add_row(k, f"{v:,}")
    console.print(steps)

    data: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    per_job = data.get("per_job_lifecycle_gas")
    checks = {
        "batch_1000_within_500": one["1000"] <= LIMIT_PER_REQUEST_AT_1000,
        "batch_1_below_per_job_lifecycle": per_job is not None and one["1"] < per_job,
    }
    data.update({
        "batch_gas_per_job": one,
        "batch_gas_per_job_ten_vouchers": ten,
        "batch_steps": b.steps,
        "batch_checks": checks,
        "batch_command": "python bench/gas_batch.py " + shlex.join(sys.argv[1:]),
        "batch_date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"per_job_lifecycle_gas (bench/gas.py): {per_job}; checks: {checks}")
    console.print(f"wrote {args.out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
