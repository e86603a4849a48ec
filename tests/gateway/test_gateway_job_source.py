"""The worker's gateway job source against a real gateway: the public ``GET /v1/jobs`` list of
posted jobs for its model, followed page by page; a claimed job leaves the list."""

from __future__ import annotations

from gateway_stack import Stack

from worker.node.sources import GatewayJobSource


def test_the_worker_reads_posted_jobs_from_the_gateways_public_list_page_by_page(stack: Stack) -> None:
    h = stack.hearth
    stack.approve("client")
    posted = []
    for i in range(3):
        posted.append(stack.post_job(texts=[f"listed job {i}"]))
    stack.wait_indexed(max(p["block_number"] for p in posted))
    ids = [p["job_id"] for p in posted]
    model = bytes.fromhex(stack.model_id[2:])

    source = GatewayJobSource(stack.base_url, [model], page_size=2)  # three jobs: two pages at least
    try:
        found = {c.job_id: c for c in source.poll(0)}
        assert set(ids) <= set(found)
        for job_id in ids:
            job = h.job(job_id)
            assert (found[job_id].input_hash, found[job_id].deadline) == (job.input_hash, job.deadline)

        rcpt = h.claim(stack.key("provider"), ids[0])
        stack.wait_indexed(rcpt["blockNumber"])
        listed = {c.job_id for c in source.poll(0)}
        assert ids[0] not in listed and set(ids[1:]) <= listed
    finally:
        source.close()
    other = GatewayJobSource(stack.base_url, [b"\x07" * 32])
    assert other.poll(0) == []
    other.close()
