"""An honest provider node takes posted jobs end to end on a real Anvil devnet."""

from __future__ import annotations

from typing import Any

from contracts import jobio
from contracts.types import Status
from tests.worker_node.conftest import USD, job_logs
from worker.model import output_hash
from worker.model.encoder import runtime_hash
from worker.node.state import JobRow, Phase

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hearth pays providers per token."]


def test_honest_node_claims_delivers_finalizes_and_withdraws(
    fresh: Any, chain: Any, make_node: Any, post_job: Any, encoder: Any
) -> None:
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


def test_jobs_of_one_pass_are_batched_together_and_each_output_is_batch_invariant(
    fresh: Any, make_node: Any, post_job: Any, encoder: Any
) -> None:
    inputs = [["short"], ["a much longer text " * 12, "and a second one"], ["mid length text here", "x", "y"]]
    jobs = [post_job(t)[0] for t in inputs]
    rep = make_node("provider", max_open_jobs=8).tick()
    assert rep.claimed == jobs and rep.computed == jobs and rep.delivered == jobs
    for job_id, texts in zip(jobs, inputs, strict=True):
        assert fresh.hearth.job(job_id).output_hash == output_hash(encoder.encode(texts))  # alone in its batch


def test_node_never_claims_a_job_whose_input_it_cannot_get_or_parse(
    fresh: Any, make_node: Any, post_job: Any, store: Any
) -> None:
    h, client = fresh.hearth, fresh.accounts["client"].key
    model = h.job(post_job(["warm-up"])[0]).model_id
    deadline = int(h.w3.eth.get_block("latest")["timestamp"]) + 3600
    late = jobio.encode_input(["uploaded after the job was posted"])
    h.approve_usd(client, 10 * USD)
    missing, _ = h.post_job(client, model, jobio.input_hash(late), USD, deadline)
    garbage = b"this is not the job input format"
    store.put(garbage)
    bad, _ = h.post_job(client, model, jobio.input_hash(garbage), USD, deadline)
    node = make_node("provider", input_retry_s=0)
    assert missing not in node.tick().claimed
    assert h.status(missing) == Status.POSTED and h.status(bad) == Status.POSTED
    store.put(late)  # the client's upload arrives
    rep = node.tick()
    assert rep.claimed == [missing] and rep.delivered == [missing]
    assert h.status(bad) == Status.POSTED  # never claimed: no collateral at risk on garbage


def test_node_service_runs_until_stopped_and_reports_health(fresh: Any, make_node: Any, post_job: Any) -> None:
    import time

    from worker.node.service import NodeService

    svc = NodeService(make_node("provider", poll_interval_s=0.1))
    assert not svc.healthy()
    svc.start()
    try:
        job_id, _ = post_job(["served by the background loop"])
        end = time.monotonic() + 30
        while fresh.hearth.status(job_id) != Status.DELIVERED and time.monotonic() < end:
            time.sleep(0.1)
        assert fresh.hearth.status(job_id) == Status.DELIVERED
        assert svc.healthy()
    finally:
        svc.stop()
    assert not svc.healthy()
