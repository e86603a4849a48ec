"""Reorgs made by anvil_reorg, anvil_rollback and evm_snapshot/evm_revert, of depth 1 to 25:
protocol events disappear, reappear in other blocks and change. After each, the index must equal
a fresh index of the canonical chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from indexer_checks import assert_index_matches_chain, db_tables
from indexer_protocol import Protocol, ReorgChain

from indexer.sync import Indexer

MakeIndexer = Callable[..., Indexer]
DEPTHS = [1, 3, 20, 25]


def busy(proto: Protocol, chain: ReorgChain, blocks: int) -> list[int]:
    """Protocol transactions (automine: one per block) until ``blocks`` blocks were added;
    returns the job ids posted."""
    start = chain.head
    jobs: list[int] = []
    step = 0
    while chain.head - start < blocks:
        if step % 3 == 0 or not jobs:
            jobs.append(proto.post(client="client2" if step % 2 else "client")[0])
        elif step % 3 == 1:
            proto.claim(jobs[-1], provider="verifier2" if step % 2 else "provider")
        else:
            proto.deliver(jobs[-1], provider="verifier2" if (step - 1) % 2 else "provider")
        step += 1
    return jobs


def raw_txs_of_last(chain: ReorgChain, depth: int) -> list[str]:
    head = chain.head
    return [chain.raw_tx(t) for t in chain.block_txs(head - depth + 1, head)]


@pytest.mark.parametrize("depth", DEPTHS)
def test_anvil_reorg_events_disappear(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain, depth: int,
) -> None:
    ix = make_indexer()
    ix.sync()
    jobs = busy(proto, ichain, depth)
    ix.sync()
    assert set(db_tables(ix.engine)["jobs"]) >= {(j,) for j in jobs}
    ichain.reorg(depth)
    ix.sync()
    assert ix.reorgs == 1
    assert not set(db_tables(ix.engine)["jobs"]) & {(j,) for j in jobs}
    assert_index_matches_chain(ix)


@pytest.mark.parametrize("depth", [2, 3, 20, 25])  # depth 1 has no other block to move to
def test_anvil_reorg_events_reappear_in_other_blocks_and_change(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain, depth: int,
) -> None:
    ix = make_indexer()
    busy(proto, ichain, 4)
    ix.sync()
    busy(proto, ichain, depth)
    ix.sync()
    raws = raw_txs_of_last(ichain, depth)
    # the first half again, all in the last new block; the second half is dropped
    keep = raws[: max(1, len(raws) // 2)]
    ichain.reorg(depth, [(r, depth - 1) for r in keep])
    ix.sync()
    assert_index_matches_chain(ix)
    # the freed job ids come back with other clients, prices and providers
    busy(proto, ichain, 5)
    ix.sync()
    assert ix.reorgs == 1
    assert_index_matches_chain(ix)


@pytest.mark.parametrize("depth", DEPTHS)
def test_anvil_rollback_then_a_different_history(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain, depth: int,
) -> None:
    ix = make_indexer()
    busy(proto, ichain, depth + 2)
    ix.sync()
    ichain.rollback(depth)
    ix.sync()  # the chain is now shorter than the index
    assert ix.cp is not None and ix.cp.block_number == ichain.head
    assert_index_matches_chain(ix)
    ichain.rollback(1)
    proto.stake("verifier", 7)
    busy(proto, ichain, depth)
    ix.sync()
    assert_index_matches_chain(ix)


@pytest.mark.parametrize("depth", DEPTHS)
def test_evm_revert_to_a_snapshot_then_other_actions(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain, depth: int,
) -> None:
    ix = make_indexer()
    busy(proto, ichain, 3)
    snap = ichain.snapshot()
    ix.sync()
    busy(proto, ichain, depth)
    ix.sync()
    ichain.revert(snap)
    proto.unbond("cheater")
    proto.update_provider("provider", "https://p.example")
    ix.sync()
    assert_index_matches_chain(ix)


def test_a_reorg_deeper_than_the_kept_blocks_reindexes_from_scratch(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain,
) -> None:
    ix = make_indexer(max_reorg_depth=4)
    busy(proto, ichain, 10)
    ix.sync()
    ichain.reorg(8)
    busy(proto, ichain, 2)
    ix.sync()
    assert ix.reorgs == 1
    assert_index_matches_chain(ix)


def test_a_reorg_between_reading_logs_and_checking_the_head_is_retried(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ix = make_indexer()
    ix.sync()
    busy(proto, ichain, 6)
    real = ix.rpc.get_logs
    fired: list[bool] = []

    def racing(addresses: list[str], frm: int, to: int) -> list[dict[str, Any]]:
        logs = real(addresses, frm, to)
        if not fired:
            fired.append(True)
            ichain.reorg(3)  # the logs just read are now partly from a dead fork
        return logs

    monkeypatch.setattr(ix.rpc, "get_logs", racing)
    ix.sync()
    assert fired
    assert_index_matches_chain(ix)


def test_reorgs_shallower_than_the_confirmations_never_reach_the_index(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain,
) -> None:
    ix = make_indexer(confirmations=5)
    busy(proto, ichain, 8)
    ix.sync()
    ichain.reorg(4)
    ix.sync()
    ichain.reorg(3)
    ichain.mine(2)
    ix.sync()
    assert ix.reorgs == 0
    assert_index_matches_chain(ix, onchain=False)


def test_crash_while_rolling_back_a_reorg_is_recovered_on_restart(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain,
) -> None:
    ix = make_indexer()
    busy(proto, ichain, 6)
    ix.sync()
    ichain.reorg(4)

    def crash(stage: str) -> None:
        if stage == "reorg_before_commit":
            raise RuntimeError("killed")

    ix.fault = crash
    with pytest.raises(RuntimeError):
        ix.sync()
    again = make_indexer()
    again.sync()
    assert again.reorgs == 1
    assert_index_matches_chain(again)
