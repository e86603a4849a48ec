"""The workload interface: SmolLM2 generation (and MiniLM embeddings) behind one API."""

from __future__ import annotations

import json

import pytest

from worker.model.llm import Engine, LlamaForward, random_weights
from worker.workloads import GenerationRequest, GenerationResult, GenerationWorkload, Workload, WorkloadError

from .conftest import TINY


@pytest.fixture(scope="module")
def workload(tiny_forward: LlamaForward) -> GenerationWorkload:
    return GenerationWorkload(tiny_forward, None, model_id=b"\x01" * 32)


def _blob(**over: object) -> bytes:
    base: dict[str, object] = {
        "max_tokens": 6,
        "prompt_ids": [5, 9, 200, 3],
        "seed": 42,
        "stop": [],
        "temperature": 0.8,
        "top_k": 0,
        "top_p": 0.95,
    }
    base.update(over)
    return json.dumps(base).encode()


def test_a_request_blob_round_trips_through_its_canonical_bytes(workload: GenerationWorkload) -> None:
    req = workload.decode_request(_blob())
    canon = workload.encode_request(req)
    assert workload.decode_request(canon) == req
    assert canon == json.dumps(json.loads(canon), sort_keys=True, separators=(",", ":")).encode()
    assert req.params.seed == 42 and req.prompt_ids == (5, 9, 200, 3)


@pytest.mark.parametrize(
    "blob",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"prompt_ids": [1]}).encode(),
        _blob(extra=1),
        _blob(prompt_ids=[]),
        _blob(prompt_ids=[1, TINY.vocab_size]),
        _blob(prompt_ids=[1.5]),
        _blob(temperature=-1),
        _blob(max_tokens=0),
        _blob(seed=-3),
        _blob(stop="x"),
    ],
)
def test_malformed_request_blobs_are_refused(workload: GenerationWorkload, blob: bytes) -> None:
    with pytest.raises(WorkloadError):
        workload.decode_request(blob)


def test_a_batch_executes_to_what_each_request_gets_alone_and_units_count_prompt_and_output(
    workload: GenerationWorkload, tiny_forward: LlamaForward
) -> None:
    reqs = [workload.decode_request(_blob(seed=s, prompt_ids=[s % 256, 7] * (s + 1))) for s in range(5)]
    outs = workload.execute(reqs)
    for req, out in zip(reqs, outs, strict=True):
        engine = Engine(tiny_forward)
        engine.add("x", req.prompt_ids, req.params)
        alone = engine.run()["x"]
        assert out.output_ids == alone.output_ids and out.finish_reason == alone.finish_reason
        assert workload.units(req, out) == len(req.prompt_ids) + len(out.output_ids)
        blob = workload.encode_output(req, out)
        assert workload.decode_output(blob) == out
        assert workload.compare(blob, workload.encode_output(*_rerun(workload, req)))


def _rerun(workload: GenerationWorkload, req: GenerationRequest) -> tuple[GenerationRequest, GenerationResult]:
    return req, workload.execute([req])[0]


def test_the_verifier_accepts_an_honest_output_by_teacher_forced_re_execution(workload: GenerationWorkload) -> None:
    for seed in range(4):
        req = workload.decode_request(_blob(seed=seed, temperature=1.0))
        out = workload.execute([req])[0]
        assert workload.verify(req, workload.encode_output(req, out))


def test_the_verifier_rejects_a_provider_that_serves_a_different_model(
    workload: GenerationWorkload,
) -> None:
    cheat = GenerationWorkload(LlamaForward(random_weights(TINY, seed=99)), None, model_id=workload.model_id())
    # Tied random embeddings make greedy output repeat the last token; a high temperature spreads it.
    req = workload.decode_request(_blob(temperature=8.0, max_tokens=8))
    forged = cheat.execute([req])[0]
    honest = workload.execute([req])[0]
    assert forged.output_ids != honest.output_ids
    assert not workload.verify(req, cheat.encode_output(req, forged))


def test_the_verifier_rejects_tampered_tokens_finish_reasons_and_malformed_outputs(
    workload: GenerationWorkload,
) -> None:
    req = workload.decode_request(_blob(temperature=0.0, max_tokens=6))
    out = workload.execute([req])[0]
    ids = list(out.output_ids)
    assert out.finish_reason == "length" and len(ids) == 6
    swapped = json.dumps({"finish_reason": "length", "output_ids": ids[:-1] + [(ids[-1] + 1) % 256]}).encode()
    assert not workload.verify(req, swapped.replace(b" ", b""))
    truncated = json.dumps({"finish_reason": "length", "output_ids": ids[:3]}, separators=(",", ":")).encode()
    assert not workload.verify(req, truncated)  # "length" before max_tokens
    wrong_reason = json.dumps({"finish_reason": "stop", "output_ids": ids}, separators=(",", ":")).encode()
    assert not workload.verify(req, wrong_reason)
    assert not workload.verify(req, b"{}")
    longer = json.dumps({"finish_reason": "length", "output_ids": ids + [1]}, separators=(",", ":")).encode()
    assert not workload.verify(req, longer)


def test_embedding_and_generation_workloads_share_the_interface(workload: GenerationWorkload) -> None:
    from worker.model import Encoder
    from worker.workloads import EmbeddingWorkload

    emb = EmbeddingWorkload(Encoder("torch", "fp32", "cpu"))
    both: list[Workload[object, object]] = [emb, workload]  # type: ignore[list-item]
    assert {w.name for w in both} == {"embedding", "generation"}
    req = emb.decode_request(b'{"texts":["hello world","a second text"]}')
    out = emb.execute([req, ("third",)])
    assert out[0].shape == (2, 384) and out[1].shape == (1, 384)
    assert emb.units(req, out[0]) == sum(emb.encoder.count_tokens(list(req)))
    assert emb.encode_output(req, out[0]) == emb.encoder.encode(list(req)).tobytes()
    assert emb.decode_request(emb.encode_request(req)) == req
    with pytest.raises(WorkloadError):
        emb.decode_request(b'{"texts": []}')
    assert emb.model_id() != workload.model_id()
