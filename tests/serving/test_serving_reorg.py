"""The provider's batch committer across a chain reorganisation that drops its commit: the batch
is found missing among the provider's ``BatchCommitted`` logs, sent again (the sender's nonce
rewound past the dropped transaction) and committed exactly once on the canonical chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eth_utils import keccak

from contracts.settlement import PaymentReceipt, Settlement, WorkReceipt
from worker.serving.ledger import Ledger
from worker.serving.settle import BatchCommitter


def _record(ledger: Ledger, provider: str, payer: str, n: int) -> None:
    rid = keccak(text=f"reorg request {n}")
    pay = PaymentReceipt(payer, provider, rid, 700, 1_700_000_000 + n)
    work = WorkReceipt(rid, payer, b"\x01" * 32, keccak(text=f"in {n}"), keccak(text=f"out {n}"), 7, 700,
                       b"\x02" * 32, b"\x03" * 32)
    ledger.record(pay, payer, b"\x04" * 65, work, b"\x05" * 65, "http://gw").result(10)


def _commits(s: Settlement, provider: str, root: bytes) -> list[int]:
    return [int(lg["args"]["batchId"]) for lg in s.batches.events.BatchCommitted().get_logs(
        from_block=0, argument_filters={"provider": provider}) if bytes(lg["args"]["root"]) == root]


def test_a_commit_dropped_by_a_reorg_is_sent_again_and_committed_once(fresh: Any, chain: Any,
                                                                       tmp_path: Path) -> None:
    h = fresh.hearth
    s = Settlement(h)
    provider = fresh.accounts["provider"]
    sender = h.sender(provider.key)
    ledger = Ledger(tmp_path / "ledger.sqlite", provider.address)
    try:
        for n in range(3):
            _record(ledger, provider.address, fresh.accounts["client"].address, n)
        committer = BatchCommitter(s, sender, ledger, max_age_s=0, recheck_s=0)
        committer.tick(final=True)
        (b,) = ledger.batches()
        assert b.batch_id is not None and _commits(s, provider.address, b.root) == [b.batch_id]

        chain.rpc("anvil_reorg", [1, []])  # the commit's block is replaced by an empty one
        assert _commits(s, provider.address, b.root) == []

        committer.tick()  # finds it gone and sends it again
        assert committer.recommitted == 1
        committer.tick(final=True)
        (again,) = ledger.batches()
        assert again.batch_id is not None
        assert _commits(s, provider.address, b.root) == [again.batch_id]
        assert ledger.batch_by_id(again.batch_id) is not None

        committer.tick()  # nothing moved since: nothing is sent a third time
        assert committer.recommitted == 1 and _commits(s, provider.address, b.root) == [again.batch_id]
    finally:
        ledger.close()
