"""The oracle: an index must equal a fresh fold of the canonical chain's logs, read with
eth_getLogs and decoded by web3 (an independent decoder), and agree with the contracts' views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from contracts.bindings import apply_job_event, decode_log
from contracts.types import Status
from indexer.decode import DecodedEvent
from indexer.projector import PRIMARY_KEYS, fold
from indexer.store import TABLES
from indexer.sync import Indexer


def _norm(v: Any) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, Mapping):  # web3 decodes a struct argument as an AttributeDict
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    return v


def chain_events(ix: Indexer, first: int, last: int) -> list[DecodedEvent]:
    """The canonical chain's protocol events in [first, last], decoded by web3."""
    h = ix.manifest.contracts
    w3 = _w3(ix)
    contracts = {h[name].address: w3.eth.contract(address=h[name].address, abi=h[name].abi)
                 for name in ix.settings.contracts}
    names = {h[name].address: name for name in ix.settings.contracts}
    if last < first:
        return []
    logs = w3.eth.get_logs({"fromBlock": first, "toBlock": last, "address": list(contracts)})
    out = []
    stamps: dict[int, int] = {}
    for lg in logs:
        ev = decode_log(contracts[lg["address"]], lg)
        bn = lg["blockNumber"]
        if bn not in stamps:
            stamps[bn] = int(w3.eth.get_block(bn)["timestamp"])
        out.append(DecodedEvent(
            bn, "0x" + bytes(lg["blockHash"]).hex(), stamps[bn],
            "0x" + bytes(lg["transactionHash"]).hex(), lg["transactionIndex"], lg["logIndex"],
            lg["address"], names[lg["address"]], ev["event"],
            {k: _norm(v) for k, v in dict(ev["args"]).items()}))
    return sorted(out, key=lambda e: (e.block_number, e.log_index))


def _w3(ix: Indexer) -> Any:
    from web3 import Web3

    return Web3(Web3.HTTPProvider(ix.rpc.url))


def db_tables(engine: Engine) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    out = {}
    with engine.connect() as conn:
        for name, t in TABLES.items():
            keys = PRIMARY_KEYS[name]
            out[name] = {tuple(r[k] for k in keys): dict(r)
                         for r in conn.execute(t.select()).mappings()}
    return out


def checkpoint(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM checkpoints WHERE id = 1")).mappings().one()
    return dict(row)


def raw_events(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT block_number, block_hash, tx_hash, log_index, address, contract, event_name, "
            "args, block_timestamp FROM raw_events ORDER BY block_number, log_index")).all()
    import json

    return [(*r[:7], json.loads(r[7]) if isinstance(r[7], str) else r[7], r[8]) for r in rows]


def assert_index_matches_chain(ix: Indexer, *, onchain: bool = True) -> int:
    """Asserts the database equals a fresh index of the canonical chain up to its checkpoint;
    returns the number of events. ``onchain``: also compare with the contracts' views (valid
    when the checkpoint is the head)."""
    engine = ix.engine
    cp = checkpoint(engine)
    w3 = _w3(ix)
    tip = w3.eth.get_block(cp["block_number"])
    assert "0x" + bytes(tip["hash"]).hex() == cp["block_hash"], "checkpoint is not canonical"

    events = chain_events(ix, cp["start_block"], cp["block_number"])
    expected_raw = [(e.block_number, e.block_hash, e.tx_hash, e.log_index, e.address, e.contract,
                     e.name, e.args, e.block_timestamp) for e in events]
    got_raw = raw_events(engine)
    assert len(got_raw) == len({(r[2], r[3]) for r in got_raw}), "duplicate raw events"
    assert got_raw == expected_raw, _diff(got_raw, expected_raw)

    expected = fold(events)
    got = db_tables(engine)
    for table in TABLES:
        assert got[table] == expected[table], f"{table}: {_diff_tables(got[table], expected[table])}"

    with engine.connect() as conn:
        blocks = conn.execute(sa.text("SELECT number, hash FROM blocks")).all()
        undo_max = conn.execute(sa.text("SELECT max(block_number) FROM undo_log")).scalar()
    for number, block_hash in blocks:
        assert number <= cp["block_number"]
        assert "0x" + bytes(w3.eth.get_block(number)["hash"]).hex() == block_hash
    assert undo_max is None or undo_max <= cp["block_number"]

    state_ok = len(w3.eth.get_code(ix.manifest.address("JobMarket"))) > 0  # see AnvilStateLost
    if onchain and state_ok and cp["block_number"] == w3.eth.block_number:
        _assert_onchain(ix, got, events)
    return len(events)


def _assert_onchain(ix: Indexer, got: dict[str, Any], events: list[DecodedEvent]) -> None:
    from contracts.bindings import Hearth

    h = Hearth(ix.manifest, _w3(ix))
    for (addr,), p in got["providers"].items():
        info = h.staking.functions.getProvider(addr).call()
        assert (p["staked"], p["locked"], p["unbonding"], p["unbond_ready_at"], p["jailed_until"],
                p["endpoint"], p["region"], p["gpu_class"]) == (*info[:5], *info[6:]), addr
    for (account,), b in got["balances"].items():
        assert b["balance"] == h.market.functions.balanceOf(account).call(), account
    web3_events: dict[int, list[DecodedEvent]] = {}
    for e in events:
        if e.contract == "JobMarket" and "jobId" in e.args and e.name != "BalanceCredited":
            web3_events.setdefault(e.args["jobId"], []).append(e)
    for (job_id,), j in got["jobs"].items():
        assert Status(h.market.functions.jobStatus(job_id).call()).label == j["status"], job_id
        rec = None
        for e in web3_events.get(job_id, []):
            args = {k: bytes.fromhex(v[2:]) if isinstance(v, str) and len(v) == 66 else v
                    for k, v in e.args.items()}
            rec = apply_job_event(rec, e.name, args)
        assert rec is not None
        assert (rec.client, rec.provider, "0x" + rec.model_id.hex(), "0x" + rec.input_hash.hex(),
                rec.max_payment, rec.price_per_unit, rec.payment, rec.collateral, rec.deadline,
                rec.challenge_end, rec.status.label, "0x" + rec.output_hash.hex()) == (
            j["client"], j["provider"], j["model_id"], j["input_hash"], j["max_payment"],
            j["price_per_unit"], j["payment"], j["collateral"], j["deadline"], j["challenge_end"],
            j["status"], j["output_hash"]), job_id


def _diff(got: list[Any], want: list[Any]) -> str:
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"first difference at {i}: got {a}, want {b}"
    return f"lengths differ: got {len(got)}, want {len(want)}"


def _diff_tables(got: dict[Any, Any], want: dict[Any, Any]) -> str:
    for k in sorted(set(got) | set(want), key=str):
        if got.get(k) != want.get(k):
            return f"row {k}: got {got.get(k)}, want {want.get(k)}"
    return "?"
