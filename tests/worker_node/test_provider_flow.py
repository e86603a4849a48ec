"""An honest provider node takes posted jobs end to end on a real Anvil devnet."""

from __future__ import annotations

from typing import Any

from contracts.types import Status
from tests.worker_node.conftest import USD, job_logs
from worker.model import output_hash
from worker.model.encoder import runtime_hash
from worker.node import jobio
from worker.node.state import JobRow, Phase

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hearth pays providers per token."]


def test_honest_node_claims_delivers_finalizes_and_withdraws(fresh: Any, chain: Any, make_node: Any,
                                                              post_job: Any, encoder: Any) -> None:
    h, acc = fresh.hearth, fresh.accounts
    provider = acc["provider"].address
    usd_before = h.usd.functions.balanceOf(provider).call()
    treasury_before = h.market.functions.balanceOf(acc["treasury"].address).call()
    job_id, _ = post_job(TEXTS, max_payment=USD)
    node = make_node("provider")

    rep = node.tick()
    assert rep.claimed == [job_id] and rep.delivered == [job_id]
    job = h.job(job_id)
    assert job.status == Status.DELIVERED and job.provider == provider

    # The on-chain output hash is keccak of the embedding computed independently.
    from worker.model import Encoder

    independent = Encoder(backend="torch", dtype="fp32", device="cpu").encode(TEXTS)
    assert job.output_hash == output_hash(independent)
    rec = job_logs(h, "ReceiptSubmitted", job_id)[0].args
    units = sum(encoder.count_tokens(TEXTS))
    assert rec["units"] == units and rec["payment"] == units * job.price_per_unit
    assert bytes(rec["runtimeHash"]) == runtime_hash("torch", "fp32")
    assert bytes(rec["modelHash"]) == job.model_id
    # ...and the stored output blob decodes to that embedding.
    out = node.store.get(job.output_hash)
    assert (jobio.decode_output(out) == independent).all()

    # Inside the window nothing is finalized; after it, the node finalizes and withdraws.
    assert node.tick().finalized == []
    chain.advance(600)
    rep = node.tick()
    assert rep.finalized == [job_id]
    payment = units * job.price_per_unit
    fee = payment * 500 // 10_000
    assert rep.withdrawn == payment - fee
    assert h.usd.functions.balanceOf(provider).call() == usd_before + payment - fee
    assert h.market.functions.balanceOf(provider).call() == 0
    assert h.market.functions.balanceOf(acc["treasury"].address).call() == treasury_before + fee
    assert h.market.functions.balanceOf(acc["client"].address).call() == USD - payment
    assert h.status(job_id) == Status.FINALIZED
    row = node.state.get(JobRow, job_id)
    assert row is not None and row.phase == Phase.FINALIZED and row.finalize_tx
    # The claimed collateral is released.
    assert h.staking.functions.getProvider(provider).call()[1] == 0
