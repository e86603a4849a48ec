"""Backfill, projections of every protocol action, restarts, crashes and RPC trouble, on
SQLite and PostgreSQL against a real Anvil."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from indexer_checks import assert_index_matches_chain, db_tables, raw_events
from indexer_protocol import HST, Protocol, ReorgChain

from contracts.types import MarketParams
from indexer.errors import RpcError, TooManyResultsError
from indexer.sync import Indexer

MakeIndexer = Callable[..., Indexer]


class Crash(Exception):
    """Stands for the process dying at a point inside the batch transaction."""


def test_backfill_mirrors_the_deployment(make_indexer: MakeIndexer, idevnet: Any) -> None:
    ix = make_indexer()
    ix.sync()
    tables = db_tables(ix.engine)
    assert len(tables["providers"]) == 4
    assert all(p["staked"] == 500 * HST for p in tables["providers"].values())
    models = {m["name"]: m for m in tables["models"].values()}
    assert set(models) == {"all-MiniLM-L6-v2", "SmolLM2-135M-Instruct"}
    assert all(m["active"] is True for m in models.values())
    assert tables["params"][("market.fee_bps",)]["value"] == "500"
    assert tables["params"][("staking.min_stake",)]["value"] == str(100 * HST)
    assert assert_index_matches_chain(ix) > 0


def test_job_lifecycle_states_carry_block_tx_and_time(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain,
) -> None:
    ix = make_indexer()
    price = proto.dn.manifest.models[0].price_per_unit
    units = 1_000
    payment = units * price
    job_id, posted = proto.post(max_payment=3 * payment)
    claimed = proto.claim(job_id)
    delivered = proto.deliver(job_id, units=units)
    ichain.advance(601)
    finalized = proto.finalize(job_id)
    ix.sync()
    job = db_tables(ix.engine)["jobs"][(job_id,)]
    for state, rcpt in (("posted", posted), ("claimed", claimed), ("delivered", delivered),
                        ("finalized", finalized)):
        assert job[f"{state}_block"] == rcpt["blockNumber"]
        assert job[f"{state}_tx"] == "0x" + bytes(rcpt["transactionHash"]).hex()
        assert job[f"{state}_at"] == ichain.w3.eth.get_block(rcpt["blockNumber"])["timestamp"]
    assert job["status"] == "finalized"
    fee = payment * 500 // 10_000
    assert (job["payment"], job["fee"], job["provider_amount"], job["client_refund"]) == (
        payment, fee, payment - fee, 2 * payment)
    assert job["relayer"] == proto.address("client")
    rows = db_tables(ix.engine)
    assert rows["receipts"][(job_id,)]["units"] == units
    assert rows["balances"][(proto.address("provider"),)]["balance"] == payment - fee
    assert rows["providers"][(proto.address("provider"),)]["jobs_done"] == 1
    assert rows["providers"][(proto.address("provider"),)]["locked"] == 0
    assert_index_matches_chain(ix)


def test_refund_dispute_slash_and_withdrawal_are_projected(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain,
) -> None:
    ix = make_indexer()
    # a claimed job that is never delivered: refund with a penalty from the collateral
    late, _ = proto.post(deadline_in=100)
    proto.claim(late, provider="cheater")
    # a delivered job the committee rejects: the provider is slashed and jailed
    wrong, _ = proto.post()
    proto.claim(wrong, provider="provider")
    proto.deliver(wrong, provider="provider")
    ix.sync()  # index part of the story first: the rest lands on existing rows
    proto.dispute(wrong, provider_right=False)
    ichain.advance(200)
    proto.refund(late)
    proto.withdraw("client")
    proto.unbond("verifier2", 3 * HST)
    proto.update_provider("verifier2", "https://v2.example")
    ix.sync()
    t = db_tables(ix.engine)
    assert t["jobs"][(late,)]["status"] == "refunded"
    params = MarketParams(*proto.h.market.functions.params().call())
    collateral = params.collateral_for(t["jobs"][(late,)]["max_payment"])  # scales with the job
    assert t["jobs"][(late,)]["penalty"] == collateral * params.refund_penalty_bps // 10_000
    assert t["jobs"][(wrong,)]["status"] == "refunded"
    ch = t["challenges"][(wrong,)]
    assert ch["status"] == "challenger_won" and ch["provider_won"] is False
    assert ch["disagree"] == len(ch["committee"]) and ch["agree"] == 0
    assert all(v["agrees"] is False for v in t["votes"].values())
    slashes = sorted(t["slashes"].values(), key=lambda s: s["block"])
    assert [(s["provider"], s["job_id"]) for s in slashes] == [
        (proto.address("provider"), wrong), (proto.address("cheater"), late)]
    prov = t["providers"][(proto.address("provider"),)]
    assert prov["slashes"] == 1 and prov["jailed_until"] > 0
    assert prov["slashed_total"] == params.collateral_for(t["jobs"][(wrong,)]["max_payment"])
    (w,) = t["withdrawals"].values()
    assert w["account"] == proto.address("client") and w["amount"] > 0
    assert t["balances"][(proto.address("client"),)]["balance"] == 0
    assert t["providers"][(proto.address("verifier2"),)]["unbonding"] == 3 * HST
    assert t["providers"][(proto.address("verifier2"),)]["endpoint"] == "https://v2.example"
    assert_index_matches_chain(ix)


def test_dispute_the_provider_wins_then_finalizes(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain,
) -> None:
    ix = make_indexer()
    job_id, _ = proto.post()
    proto.claim(job_id)
    proto.deliver(job_id)
    proto.dispute(job_id, provider_right=True)
    proto.finalize(job_id)
    ix.sync()
    t = db_tables(ix.engine)
    assert t["challenges"][(job_id,)]["status"] == "provider_won"
    assert t["jobs"][(job_id,)]["status"] == "finalized"
    # the challenger's bond went to the provider
    assert t["balances"][(proto.address("provider"),)]["credited"] > 0
    assert_index_matches_chain(ix)


def test_restarts_are_idempotent(make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain) -> None:
    for _ in range(3):
        proto.post()
    first = make_indexer(initial_range=5, max_range=5)
    first.step()
    first.step()
    first.close()
    for _ in range(3):
        proto.post()
    again = make_indexer(initial_range=7, max_range=7)
    again.sync()
    third = make_indexer()
    third.sync()  # nothing new: a no-op
    assert assert_index_matches_chain(third) == len(raw_events(third.engine))


@pytest.mark.parametrize("stage", ["after_raw_events", "after_projections", "before_commit"])
def test_a_crash_inside_a_batch_leaves_no_half_batch(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain, stage: str,
) -> None:
    ix = make_indexer()
    ix.sync()
    before = (db_tables(ix.engine), raw_events(ix.engine))
    job_id, _ = proto.post()
    proto.claim(job_id)

    def crash(at: str) -> None:
        if at == stage:
            raise Crash(at)

    ix.fault = crash
    with pytest.raises(Crash):
        ix.sync()
    assert (db_tables(ix.engine), raw_events(ix.engine)) == before
    restarted = make_indexer()
    restarted.sync()
    assert db_tables(restarted.engine)["jobs"][(job_id,)]["status"] == "claimed"
    assert_index_matches_chain(restarted)


def test_log_ranges_shrink_on_too_many_results_and_grow_back(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ichain.mine(200)
    ix = make_indexer(initial_range=64, max_range=512, target_logs=1_000)
    real = ix.rpc.get_logs
    spans: list[int] = []

    def limited(addresses: list[str], frm: int, to: int) -> list[dict[str, Any]]:
        spans.append(to - frm + 1)
        if to - frm + 1 > 16:
            raise TooManyResultsError("query returned more than 10000 results")
        return real(addresses, frm, to)

    monkeypatch.setattr(ix.rpc, "get_logs", limited)
    ix.sync()
    assert spans[:3] == [64, 32, 16]
    def recording(addresses: list[str], frm: int, to: int) -> list[dict[str, Any]]:
        spans.append(to - frm + 1)
        return real(addresses, frm, to)

    monkeypatch.setattr(ix.rpc, "get_logs", recording)
    ichain.mine(300)
    ix.sync()
    assert max(spans[-3:]) > 16  # grew again once answers were small
    assert_index_matches_chain(ix)


def test_log_ranges_shrink_when_the_node_keeps_failing(
    make_indexer: MakeIndexer, ichain: ReorgChain, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ichain.mine(100)
    ix = make_indexer(initial_range=64)
    real = ix.rpc.get_logs
    spans: list[int] = []

    def timing_out(addresses: list[str], frm: int, to: int) -> list[dict[str, Any]]:
        spans.append(to - frm + 1)
        if to - frm + 1 > 8:
            raise RpcError("eth_getLogs: request timed out")
        return real(addresses, frm, to)

    monkeypatch.setattr(ix.rpc, "get_logs", timing_out)
    for _ in range(10):
        try:
            ix.sync()
            break
        except RpcError:
            continue
    assert spans[:4] == [64, 32, 16, 8]
    assert_index_matches_chain(ix)


def test_transport_errors_are_retried_with_backoff(
    make_indexer: MakeIndexer, proto: Protocol, monkeypatch: pytest.MonkeyPatch,
) -> None:
    proto.post()
    ix = make_indexer()
    ix.rpc.backoff = 0.01
    real_post = ix.rpc._client.post
    failures = iter([True, True, False] * 100)

    def flaky(*args: Any, **kwargs: Any) -> httpx.Response:
        if next(failures):
            raise httpx.ConnectError("connection refused")
        return real_post(*args, **kwargs)

    monkeypatch.setattr(ix.rpc._client, "post", flaky)
    ix.sync()
    assert ix.rpc.errors > 0
    assert ix.metrics.registry.get_sample_value("hearth_indexer_rpc_errors_total") == ix.rpc.errors
    assert_index_matches_chain(ix)


def test_confirmations_keep_the_index_behind_the_head(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain,
) -> None:
    ix = make_indexer(confirmations=3)
    job_id, _ = proto.post()
    ix.sync()
    assert ix.cp is not None and ix.cp.block_number == ichain.head - 3
    assert (job_id,) not in db_tables(ix.engine)["jobs"]
    ichain.mine(3)
    ix.sync()
    assert (job_id,) in db_tables(ix.engine)["jobs"]
    assert_index_matches_chain(ix, onchain=False)


def test_a_new_deployment_in_the_same_database_starts_a_new_index(
    make_indexer: MakeIndexer, idevnet: Any,
) -> None:
    ix = make_indexer()
    ix.sync()
    with ix.engine.begin() as conn:
        conn.execute(sa.text("UPDATE checkpoints SET deployment = :d"), {"d": "0x" + "11" * 20})
    again = make_indexer()
    again.sync()
    assert_index_matches_chain(again)


def test_rebuild_from_raw_events_reproduces_the_projections(
    make_indexer: MakeIndexer, proto: Protocol, ichain: ReorgChain,
) -> None:
    job_id, _ = proto.post()
    proto.claim(job_id)
    proto.deliver(job_id)
    ix = make_indexer()
    ix.sync()
    before = db_tables(ix.engine)
    assert ix.rebuild() == len(raw_events(ix.engine))
    assert db_tables(ix.engine) == before
