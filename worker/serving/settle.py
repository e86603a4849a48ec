"""The provider's settlement duties: commit batches of leaves, collect vouchers.

:class:`BatchCommitter` cuts a batch every ``max_leaves`` leaves or ``max_age_s`` seconds
(whichever comes first): it assigns the leaves to the batch in the ledger (one transaction,
the tree's root with it) *before* sending ``commitBatch``, sends through ``TxSender.submit``
without waiting, and records the on-chain batch id when the transaction is mined, so several
commits are in flight at once. On restart, a batch cut but not known to be mined is looked up
among the provider's ``BatchCommitted`` logs by its root before it is sent again: a leaf is in
exactly one committed batch. Every ``recheck_s`` seconds the batches cut in the last
``reorg_depth`` blocks and recorded committed are looked up among the provider's
``BatchCommitted`` logs again: one a reorganisation re-included under another batch id is
recorded under that id, and one whose commit the reorganisation dropped is sent again.

:class:`VoucherCollector` asks the payer's aggregator (the gateway whose signer signed the
receipts) for a cumulative voucher once a payer's uncollected value passes ``threshold``, or at
once when the payer starts a thaw, checks the voucher's signer on-chain, stores it, and
redeems it with ``collect``; every ``recheck_s`` seconds a collected voucher whose lane shows
less collected (a reorganisation dropped the ``collect``) is redeemed again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
from web3 import Web3

from contracts.chain import PendingTx, TxSender
from contracts.errors import ChainError
from contracts.serving import recover_voucher, voucher_from_json
from contracts.settlement import Settlement, WorkBatch, WorkReceipt
from worker.serving.ledger import BatchRow, Ledger

log = logging.getLogger(__name__)


class BatchCommitter:
    def __init__(self, settlement: Settlement, sender: TxSender, ledger: Ledger, *, max_leaves: int = 256,
                 max_age_s: float = 2.0, poll_s: float = 0.1, recheck_s: float = 2.0,
                 reorg_depth: int = 64) -> None:
        self.s = settlement
        self.sender = sender
        self.ledger = ledger
        self.max_leaves = max_leaves
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self.reorg_depth = reorg_depth
        #: a commit not mined after this long whose transaction the node does not know is sent again
        self.lost_after_s = 3.0
        self._next_recheck = 0.0
        self.recommitted = 0
        self._inflight: dict[int, PendingTx] = {}
        self._resend: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.committed = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="batch-committer", daemon=True)
        self._thread.start()

    def stop(self, flush: bool = True) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)
        if flush:
            self.tick(final=True)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - retried next tick; reported on health
                self.error = exc
                log.warning("batch committer: %s", exc)

    def _root_of(self, receipts: list[WorkReceipt]) -> tuple[bytes, int, int]:
        wb = WorkBatch(list(receipts), self.s.chain_id, self.s.batches.address)
        return wb.root, wb.units, wb.value

    def tick(self, *, final: bool = False) -> None:
        self._reap(wait=final)
        for seq, at in list(self._resend.items()):
            if time.monotonic() >= at:
                del self._resend[seq]
                row = next((b for b in self.ledger.batches(open_only=True) if b.seq == seq), None)
                if row is not None:
                    self._send_unless_committed(row)
        n, oldest = self.ledger.unbatched()
        while n and (final or n >= self.max_leaves or (oldest is not None and time.time() - oldest >= self.max_age_s)):
            cut = self.ledger.cut_batch(self.max_leaves, int(self.s.h.w3.eth.block_number), self._root_of)
            if cut is None:
                break
            try:
                self._send(cut[0])
            except Exception as exc:  # noqa: BLE001 - the RPC failed: the cut batch must not be forgotten
                self._send_later(cut[0].seq, exc)
            n, oldest = self.ledger.unbatched()
        if final:
            self._reap(wait=True)
        if time.monotonic() >= self._next_recheck:
            self._next_recheck = time.monotonic() + self.recheck_s
            self._recheck()

    def _recheck(self) -> None:
        """Batches recorded committed in the last ``reorg_depth`` blocks whose commit is no longer
        on the canonical chain (a reorganisation dropped it) are sent again; one re-included
        under another batch id is recorded under that id. A commit in flight for a while whose
        transaction the node no longer knows (mined, then dropped before its receipt was read) is
        sent again."""
        for seq, pending in list(self._inflight.items()):
            if time.monotonic() - pending.sent_at > self.lost_after_s and self.sender.lost(pending):
                del self._inflight[seq]
                self._send_later(seq, RuntimeError(f"commit tx {pending.tx_hash.hex()} is gone (reorganisation)"),
                                 0.0)
        head = int(self.s.h.w3.eth.block_number)
        recent = self.ledger.committed_since(head - self.reorg_depth)
        if not recent:
            return
        # A reorganisation may have left the head below the block a batch was made at; a range
        # starting past the head is refused by the node, so it starts at the head at the latest.
        logs = self.s.batches.events.BatchCommitted().get_logs(
            from_block=min(head, *(b.created_block for b in recent)),
            argument_filters={"provider": self.sender.address})
        by_root = {bytes(lg["args"]["root"]): lg for lg in logs}
        for b in recent:
            lg = by_root.get(b.root)
            if lg is None:
                log.warning("batch %d (batch id %s, tx %s) is no longer on the chain (reorganisation): sending "
                            "it again", b.seq, b.batch_id, b.tx_hash)
                self.ledger.reopen_batch(b.seq)
                self.recommitted += 1
                try:
                    self._send(b)
                except Exception as exc:  # noqa: BLE001 - tried again after a pause
                    self._send_later(b.seq, exc)
            elif int(lg["args"]["batchId"]) != b.batch_id:
                log.warning("batch %d moved from batch id %s to %d (reorganisation)", b.seq, b.batch_id,
                            int(lg["args"]["batchId"]))
                self._record(b.seq, self.s.h.w3.eth.get_transaction_receipt(lg["transactionHash"]))

    def _send_later(self, seq: int, exc: BaseException, delay_s: float = 1.0) -> None:
        self._resend[seq] = time.monotonic() + delay_s
        self.error = exc
        log.warning("batch %d not sent (%s): trying again in %.0f s", seq, exc, delay_s)

    def _send_unless_committed(self, b: BatchRow) -> None:
        """Sends ``b`` again, unless its root is already committed on-chain: a send whose answer
        was lost (a dropped connection after the node took the transaction) must not commit the
        same leaves twice."""
        try:
            if b.seq not in self._find_committed([b]):
                self._send(b)
        except Exception as exc:  # noqa: BLE001 - tried again after a pause
            self._send_later(b.seq, exc)

    def _send(self, b: BatchRow) -> None:
        fn = self.s.batches.functions.commitBatch(b.root, b.count, b.units, b.value)
        pending = self.sender.submit(fn)
        self.ledger.set_batch_tx(b.seq, "0x" + bytes(pending.tx_hash).hex())
        self._inflight[b.seq] = pending
        log.info("batch %d sent: %d leaves, value %d, tx %s", b.seq, b.count, b.value, pending.tx_hash.hex())

    def _reap(self, *, wait: bool) -> None:
        for seq, pending in list(self._inflight.items()):
            if not wait:
                try:
                    self.s.h.w3.eth.get_transaction_receipt(pending.tx_hash)
                except Exception:  # noqa: BLE001 - not mined yet
                    continue
            try:
                rcpt = self.sender.wait(pending, timeout=60)
            except ChainError as exc:  # reverted or never mined: sent again after a pause
                del self._inflight[seq]
                self._send_later(seq, exc, 5.0)
                continue
            self._record(seq, rcpt)
            del self._inflight[seq]

    def _record(self, seq: int, rcpt: Any) -> None:
        for lg in rcpt["logs"]:
            if lg["address"] == self.s.batches.address:
                a = self.s.batches.events.BatchCommitted().process_log(lg)["args"]
                self.ledger.set_batch_committed(seq, int(a["batchId"]), int(a["committedAt"]), int(rcpt["gasUsed"]))
                self.committed += 1
                log.info("batch %d committed as batch id %d", seq, int(a["batchId"]))
                return
        raise RuntimeError(f"commit of batch {seq} emitted no BatchCommitted")

    def _recover(self) -> None:
        """Batches cut before a restart and not known mined: find them on-chain by root, else send."""
        open_ = self.ledger.batches(open_only=True)
        if not open_:
            return
        found = self._find_committed(open_)
        for b in open_:
            if b.seq not in found:
                log.info("batch %d was cut but not committed before the restart: sending it", b.seq)
                try:
                    self._send(b)
                except Exception as exc:  # noqa: BLE001 - tried again from the loop
                    self._send_later(b.seq, exc)

    def _find_committed(self, batches: list[BatchRow]) -> set[int]:
        """Records those of ``batches`` whose root this provider already committed on-chain;
        returns their sequence numbers."""
        if not batches:
            return set()
        start = min(int(self.s.h.w3.eth.block_number), *(b.created_block for b in batches))
        logs = self.s.batches.events.BatchCommitted().get_logs(from_block=start,
                                                               argument_filters={"provider": self.sender.address})
        by_root = {bytes(lg["args"]["root"]): lg for lg in logs}
        found = set()
        for b in batches:
            lg = by_root.get(b.root)
            if lg is not None:
                self._record(b.seq, self.s.h.w3.eth.get_transaction_receipt(lg["transactionHash"]))
                found.add(b.seq)
        return found


class VoucherCollector:
    def __init__(self, settlement: Settlement, sender: TxSender, ledger: Ledger, *, threshold: int,
                 interval_s: float = 1.0, default_aggregator: str | None = None, recheck_s: float = 5.0) -> None:
        self.s = settlement
        self.sender = sender
        self.ledger = ledger
        self.threshold = threshold
        self.interval_s = interval_s
        #: how often a collected voucher is checked against its lane (a reorganisation may drop a collect)
        self.recheck_s = recheck_s
        self._next_recheck = 0.0
        self.default_aggregator = default_aggregator
        self._urgent: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=10)
        self.collected_total = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="voucher-collector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(30)
        self._http.close()

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def urge(self, payer: str) -> None:
        """Collect from ``payer`` now (its lane started thawing, or its signer is leaving)."""
        with self._lock:
            self._urgent.add(payer)
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - retried next tick
                self.error = exc
                log.warning("voucher collector: %s", exc)

    def tick(self, *, force: bool = False) -> int:
        """Collects what is due; returns what was paid."""
        with self._lock:
            urgent, self._urgent = self._urgent, set()
        totals = self.ledger.totals_by_payer()
        recheck = time.monotonic() >= self._next_recheck
        if recheck:
            self._next_recheck = time.monotonic() + self.recheck_s
        due, redo = [], set()
        for payer, total in totals.items():
            held = self.ledger.voucher(payer)
            covered = held.voucher.cumulative_value if held else 0
            if held is not None and not held.collected:
                due.append(payer)  # stored but not redeemed yet (e.g. a restart)
            elif total - covered >= self.threshold or ((payer in urgent or force) and total > covered):
                due.append(payer)
            elif held is not None and recheck and covered > self.s.lane(payer, self.sender.address).collected:
                # a reorganisation dropped the collect: redeem the same voucher again
                log.warning("the collect of voucher %d from %s is no longer on the chain: collecting again",
                            covered, payer)
                due.append(payer)
                redo.add(payer)
        paid = 0
        aggs = self.ledger.aggregators() if due else {}
        for payer in due:
            paid += self._collect(payer, aggs.get(payer) or self.default_aggregator, redo=payer in redo)
        return paid

    def _collect(self, payer: str, aggregator: str | None, *, redo: bool = False) -> int:
        held = self.ledger.voucher(payer)
        if held is None or (held.collected and not redo):
            if aggregator is None:
                log.warning("no aggregator known for payer %s", payer)
                return 0
            r = self._http.post(f"{aggregator.rstrip('/')}/v1/serving/vouchers",
                                json={"payer": payer, "provider": self.sender.address})
            if r.status_code != 200:
                log.warning("aggregator %s refused a voucher for %s: %s", aggregator, payer, r.text[:200])
                return 0
            v, sig = voucher_from_json(r.json()["voucher"])
            if v.payer.lower() != payer.lower() or v.provider.lower() != self.sender.address.lower():
                raise RuntimeError(f"aggregator {aggregator} answered a voucher for another lane")
            signer = recover_voucher(v, sig, self.s.chain_id, self.s.escrow.address)
            if not self.s.escrow.functions.isValidSigner(Web3.to_checksum_address(payer), signer).call():
                log.warning("voucher for %s signed by %s, not a valid signer", payer, signer)
                return 0
            if held is not None and v.cumulative_value <= held.voucher.cumulative_value:
                return 0  # nothing new accepted by the payer's side
            self.ledger.put_voucher(v, sig)
            held = self.ledger.voucher(payer)
            assert held is not None
        lane = self.s.lane(payer, self.sender.address)
        if held.voucher.cumulative_value <= lane.collected:
            self.ledger.set_voucher_collected(payer, held.voucher.cumulative_value, "", 0)
            return 0
        fn = self.s.escrow.functions.collect([held.voucher.as_tuple()], [held.signature])
        rcpt = self.sender.wait(self.sender.submit(fn), timeout=60)
        paid = 0
        for lg in rcpt["logs"]:
            if lg["address"] == self.s.escrow.address:
                ev = self.s.escrow.events.Collected().process_log(lg)
                paid += int(ev["args"]["amount"])
        self.ledger.set_voucher_collected(payer, held.voucher.cumulative_value,
                                          "0x" + bytes(rcpt["transactionHash"]).hex(), int(rcpt["gasUsed"]))
        self.collected_total += paid
        log.info("collected %d from %s (voucher %d)", paid, payer, held.voucher.cumulative_value)
        return paid
