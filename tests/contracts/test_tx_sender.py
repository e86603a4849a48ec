"""The transaction sender against a real Anvil: many transactions from one key in flight at
once, transactions that depend on unmined ones, fee bumps of stuck ones, re-broadcast of dropped
ones, and a restart while transactions are pending."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from contract_kit import USD, Market

from contracts.chain import PendingTx, TxSender
from contracts.errors import ChainError


@pytest.fixture
def manual(market: Market) -> Iterator[Market]:
    """Blocks are mined only when the test says so."""
    market.clock.rpc("evm_setAutomine", [False])
    try:
        yield market
    finally:
        market.clock.rpc("evm_setAutomine", [True])


def _mine(m: Market) -> None:
    m.clock.rpc("anvil_mine", ["0x1"])


def _wait_in_thread(sender: TxSender, pending: PendingTx) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["receipt"] = sender.wait(pending)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_one_key_has_many_transactions_in_flight_and_they_are_mined_in_one_block(manual: Market) -> None:
    m = manual
    sender = TxSender(m.h.w3, m.key("client"), m.h.decoder)
    to = m.addr("provider")
    before = m.usd(to)
    sent = [sender.submit(m.h.usd.functions.transfer(to, 1 + i)) for i in range(30)]
    assert sender.in_flight == 30
    assert [p.nonce for p in sent] == list(range(sent[0].nonce, sent[0].nonce + 30))
    _mine(m)
    receipts = [sender.wait(p) for p in sent]
    assert {r["blockNumber"] for r in receipts} == {receipts[0]["blockNumber"]}
    assert sender.in_flight == 0
    assert m.usd(to) - before == sum(range(1, 31))


def test_a_transaction_may_depend_on_an_earlier_one_that_is_not_mined_yet(manual: Market) -> None:
    m = manual
    sender = TxSender(m.h.w3, m.key("client"), m.h.decoder)
    h = m.h
    mid = m.model_id
    now = m.clock.now()
    approve = sender.submit(h.usd.functions.approve(h.market.address, 0))
    _mine(m)
    sender.wait(approve)
    # postJob pulls the escrow, so it reverts unless the approval before it is applied.
    first = sender.submit(h.usd.functions.approve(h.market.address, USD))
    second = sender.submit(h.market.functions.postJob(mid, b"\x11" * 32, USD, now + 3600))
    _mine(m)
    assert sender.wait(first)["blockNumber"] == sender.wait(second)["blockNumber"]


def test_a_revert_found_by_the_estimate_uses_no_nonce(manual: Market) -> None:
    m = manual
    sender = TxSender(m.h.w3, m.key("client"), m.h.decoder)
    ok = sender.submit(m.h.usd.functions.transfer(m.addr("provider"), 1))
    with pytest.raises(ChainError):
        sender.submit(m.h.usd.functions.transfer(m.addr("provider"), 10**40))
    nxt = sender.submit(m.h.usd.functions.transfer(m.addr("provider"), 1))
    assert nxt.nonce == ok.nonce + 1
    _mine(m)
    sender.wait(ok), sender.wait(nxt)


def test_a_stuck_transaction_is_replaced_with_higher_fees(manual: Market) -> None:
    m = manual
    sender = TxSender(m.h.w3, m.key("client"), m.h.decoder, receipt_timeout=0.3, max_bumps=5, poll=0.02)
    pending = sender.submit(m.h.usd.functions.transfer(m.addr("provider"), 5))
    first_tip = pending.params["maxPriorityFeePerGas"]
    t, out = _wait_in_thread(sender, pending)
    for _ in range(200):
        if len(pending.hashes) > 1:
            break
        t.join(0.02)
    assert len(pending.hashes) > 1, "no replacement was sent"
    _mine(m)
    t.join(10)
    rcpt = out["receipt"]
    assert rcpt["transactionHash"] in pending.hashes[1:]
    mined = m.h.w3.eth.get_transaction(rcpt["transactionHash"])
    assert mined["maxPriorityFeePerGas"] > first_tip
    assert mined["nonce"] == pending.nonce


def test_a_transaction_the_node_dropped_is_broadcast_again(manual: Market) -> None:
    m = manual
    sender = TxSender(m.h.w3, m.key("client"), m.h.decoder, receipt_timeout=0.3, max_bumps=5, poll=0.02)
    pending = sender.submit(m.h.usd.functions.transfer(m.addr("provider"), 7))
    m.clock.rpc("anvil_dropTransaction", [pending.tx_hash.to_0x_hex()])
    t, out = _wait_in_thread(sender, pending)
    for _ in range(200):
        if sender._known(pending.tx_hash):
            break
        t.join(0.02)
    assert sender._known(pending.tx_hash), "the dropped transaction was not sent again"
    _mine(m)
    t.join(10)
    assert out["receipt"]["status"] == 1


def test_a_restarted_sender_continues_after_the_transactions_still_pending(manual: Market) -> None:
    m = manual
    old = TxSender(m.h.w3, m.key("client"), m.h.decoder)
    sent = [old.submit(m.h.usd.functions.transfer(m.addr("provider"), 1)) for _ in range(3)]
    new = TxSender(m.h.w3, m.key("client"), m.h.decoder)
    after = new.submit(m.h.usd.functions.transfer(m.addr("provider"), 1))
    assert after.nonce == sent[-1].nonce + 1
    _mine(m)
    assert new.wait(after)["status"] == 1
    assert all(old.wait(p)["status"] == 1 for p in sent)


def test_many_threads_share_one_sender_without_reusing_a_nonce(manual: Market) -> None:
    m = manual
    sender = TxSender(m.h.w3, m.key("client"), m.h.decoder)
    got: list[PendingTx] = []
    lock = threading.Lock()

    def send() -> None:
        p = sender.submit(m.h.usd.functions.transfer(m.addr("provider"), 1))
        with lock:
            got.append(p)

    threads = [threading.Thread(target=send) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.nonce for p in got}) == 16
    _mine(m)
    assert all(sender.wait(p)["status"] == 1 for p in got)
