"""Posting embedding jobs from a client wallet, and the cheater demo (``hearth demo``): a
private devnet where an honest node and a cheating node take jobs, a verifier re-executes every
receipt, challenges the cheater, the committee votes by commit-reveal, and the cheater is
slashed and jailed while the honest node is paid. Chain time is advanced with
``evm_increaseTime`` instead of waiting out the real windows.

The cheating node is an ordinary :class:`~worker.node.node.Node` given a
:class:`CheatingExecutor`: no setting of the worker turns a production node into a cheater;
only this demo and the tests build one.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.blobs import BlobStore, LocalBlobStore
from contracts import jobio
from contracts.bindings import Hearth
from deploy.devnet import anvil_call
from worker.node.compute import ComputeRequest, ComputeResult, Outcome
from worker.node.executor import Executor

log = logging.getLogger(__name__)


def perturb_output(data: bytes) -> bytes:
    """A cheating node's output: the lowest mantissa bit of the first value flipped. The
    embedding is numerically all but unchanged; its hash, and so the receipt, is wrong."""
    if not data:
        return data
    return bytes([data[0] ^ 0x01]) + data[1:]


class CheatingExecutor:
    """An executor that delivers perturbed outputs: it runs ``inner`` honestly, then stores and
    reports a one-bit-flipped copy of each output (what verifiers and committees must catch)."""

    def __init__(self, inner: Executor, store: BlobStore) -> None:
        self.inner = inner
        self.store = store
        self.runtime_hash = inner.runtime_hash
        self.model_hash = inner.model_hash

    def run(self, requests: Sequence[ComputeRequest], *, owner: str | None = None) -> list[Outcome]:
        out: list[Outcome] = []
        for o in self.inner.run(requests, owner=owner):
            if isinstance(o, ComputeResult):
                bad = perturb_output(self.store.get(o.output_blob))
                o = ComputeResult(o.job_id, o.input_blob, self.store.put(bad), jobio.output_hash(bad), o.units)
            out.append(o)
        return out


def post_embedding_job(
    h: Hearth,
    store: BlobStore,
    client_key: str,
    texts: str | Sequence[str],
    max_payment: int,
    deadline_in_s: int = 3600,
) -> tuple[int, str]:
    """Uploads the input blob, approves the escrow if needed and posts the job from the
    client's wallet; returns (job id, input blob id)."""
    data = jobio.encode_input(texts)
    blob = store.put(data)
    client = h.sender(client_key).address
    if h.usd.functions.allowance(client, h.market.address).call() < max_payment:
        h.approve_usd(client_key, max_payment)
    now = int(h.w3.eth.get_block("latest")["timestamp"])
    job_id, _ = h.post_job(client_key, _model_id(h), jobio.input_hash(data), max_payment, now + deadline_in_s)
    return job_id, blob


def _model_id(h: Hearth) -> bytes:
    if h.manifest.models:
        return bytes.fromhex(h.manifest.models[0].model_id.removeprefix("0x"))
    from worker.model.encoder import model_hash

    return model_hash()


def advance(h: Hearth, seconds: int) -> None:
    """Moves chain time forward and mines a block (Anvil/Hardhat RPC)."""
    anvil_call(h.w3, "evm_increaseTime", [seconds])
    anvil_call(h.w3, "anvil_mine", ["0x1"])


@dataclass
class DemoOutcome:
    honest_job: int
    cheater_job: int
    balances_before: dict[str, dict[str, int]]
    balances_after: dict[str, dict[str, int]]
    cheater_jailed_until: int


def balances(h: Hearth, accounts: dict[str, Any]) -> dict[str, dict[str, int]]:
    out = {}
    for role in ("client", "provider", "cheater", "verifier", "verifier2", "treasury"):
        a = accounts[role].address
        info = h.staking.functions.getProvider(a).call()
        out[role] = {
            "usd": h.usd.functions.balanceOf(a).call(),
            "hst": h.hst.functions.balanceOf(a).call(),
            "staked": int(info[0]),
            "credit": h.market.functions.balanceOf(a).call(),
        }
    return out


def run_cheater_demo(work_dir: Path | None = None) -> DemoOutcome:
    """Brings up a private devnet and plays the cheater scenario (see the module docstring)."""
    from deploy.devnet import bring_up, free_port
    from worker.node.config import NodeConfig
    from worker.node.executor import InProcessExecutor
    from worker.node.node import Node

    tmp = tempfile.TemporaryDirectory() if work_dir is None else None
    root = Path(tmp.name) if tmp else Path(work_dir)  # type: ignore[arg-type]
    dn = bring_up(port=free_port(), write=False, anvil_log=root / "anvil.log")
    try:
        h, acc = dn.hearth, dn.accounts
        store = LocalBlobStore(root / "blobs")
        ex = InProcessExecutor(store)

        def node(who: str, executor: Executor = ex, **cfg: Any) -> Node:
            return Node(
                h, acc[who].key, store, executor, NodeConfig(name=who, withdraw_interval_s=0, **cfg),
                state_dir=root / "state",
            )

        honest, cheater = node("provider"), node("cheater", CheatingExecutor(ex, store))
        verifier = node("verifier", role="verifier", sample_all=True)
        verifier2 = node("verifier2", role="verifier")
        everyone = (honest, cheater, verifier, verifier2)
        for n in everyone:
            n.preflight()
        before = balances(h, acc)
        client = acc["client"].key
        log.info("client posts job A; the honest node takes it")
        job_a, _ = post_embedding_job(
            h,
            store,
            client,
            ["Hearth runs inference on GPUs anyone can contribute.", "Every result is bound to an on-chain receipt."],
            10**6,
        )
        honest.tick()
        log.info("client posts job B; the cheating node takes it and delivers a perturbed embedding")
        job_b, _ = post_embedding_job(h, store, client, ["A cheater flips one bit of the output."], 10**6)
        cheater.tick()
        anvil_call(h.w3, "anvil_mine", ["0x1"])
        log.info("the verifier re-executes every receipt (--sample-all) and challenges mismatches")
        verifier.tick()
        log.info("two blocks later the challenger draws the committee from a block hash nobody knew at the challenge")
        anvil_call(h.w3, "anvil_mine", ["0x3"])
        verifier.tick()
        log.info("the committee (drawn, stake-weighted, from the other providers) re-executes and commits")
        for n in everyone:
            n.tick()
        p = h.market_params()
        advance(h, p.commit_period)
        log.info("reveal phase")
        for n in everyone:
            n.tick()
        advance(h, p.reveal_period)
        log.info("reveal phase over: anyone resolves the dispute; job A's challenge window has passed too")
        for n in everyone:
            n.tick()
        advance(h, p.challenge_window)
        log.info("everyone withdraws what is credited to them")
        for n in everyone:
            n.tick(final=True)
        info = h.staking.functions.getProvider(acc["cheater"].address).call()
        for n in everyone:
            n.close()
        return DemoOutcome(job_a, job_b, before, balances(h, acc), int(info[4]))
    finally:
        dn.anvil.stop()
        if tmp:
            tmp.cleanup()
