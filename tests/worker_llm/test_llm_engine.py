"""The continuous-batching engine: joining and leaving, finishing, pages, bad input."""

from __future__ import annotations

import random

import pytest

from worker.model.errors import InvalidInputError
from worker.model.llm import (
    CacheFullError,
    ChatTokenizer,
    Completion,
    Engine,
    LlamaForward,
    SamplingParams,
    teacher_forced_logits,
    token_logprobs,
)


def _prompt(seed: int, n: int, vocab: int = 256) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(n)]


def _alone(forward: LlamaForward, prompt: list[int], params: SamplingParams) -> Completion:
    engine = Engine(forward, record_logits=True, num_pages=64)
    engine.add("x", prompt, params)
    return engine.run()["x"]


def test_requests_joining_and_leaving_at_every_step_get_the_tokens_they_get_alone(
    tiny_forward: LlamaForward,
) -> None:
    specs = [(_prompt(i, 3 + 5 * i), SamplingParams(max_tokens=2 + i % 5, seed=i, ignore_eos=True)) for i in range(10)]
    engine = Engine(tiny_forward, record_logits=True, num_pages=256, prefill_chunk=4)
    done: dict[str, Completion] = {}
    running_counts = []
    for i, (prompt, params) in enumerate(specs):
        engine.add(str(i), prompt, params)  # a new request before every step
        engine.step()
        running_counts.append(engine.num_running)
        done.update(engine.pop_finished())
    done.update(engine.run())
    assert len(set(running_counts)) > 1  # the batch changed size as requests came and went
    for i, (prompt, params) in enumerate(specs):
        ref = _alone(tiny_forward, prompt, params)
        got = done[str(i)]
        assert got.output_ids == ref.output_ids
        assert got.logits is not None and ref.logits is not None
        assert got.logits.numpy().tobytes() == ref.logits.numpy().tobytes()


def test_max_tokens_ends_a_request_with_finish_reason_length(tiny_forward: LlamaForward) -> None:
    c = _alone(tiny_forward, _prompt(1, 9), SamplingParams(max_tokens=5, ignore_eos=True))
    assert len(c.output_ids) == 5 and c.finish_reason == "length"


def test_an_end_of_sequence_token_ends_a_request_with_finish_reason_stop(tiny_forward: LlamaForward) -> None:
    free = _alone(tiny_forward, _prompt(2, 9), SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    eos = free.output_ids[3]
    first = free.output_ids.index(eos)
    engine = Engine(tiny_forward, num_pages=64, eos_ids=[eos])
    engine.add("x", _prompt(2, 9), SamplingParams(max_tokens=8, temperature=0.0))
    c = engine.run()["x"]
    assert c.finish_reason == "stop"
    assert c.output_ids == free.output_ids[: first + 1]


def test_a_stop_string_ends_the_text_before_it(smol_forward: LlamaForward, chat_tokenizer: ChatTokenizer) -> None:
    prompt = chat_tokenizer.encode_chat([{"role": "user", "content": "Count from 1 to 10, separated by commas."}])

    def run(params: SamplingParams) -> Completion:
        engine = Engine(smol_forward, chat_tokenizer, num_pages=64)
        engine.add("x", prompt, params)
        return engine.run()["x"]

    free = run(SamplingParams(max_tokens=12, temperature=0.0))
    assert len(free.text) > 8
    stop = free.text[4:7]
    cut = run(SamplingParams(max_tokens=12, temperature=0.0, stop=(stop, "never-seen")))
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.output_ids == free.output_ids[: len(cut.output_ids)]
    assert len(cut.output_ids) < len(free.output_ids)


def test_pages_are_returned_when_requests_finish_and_waiting_requests_then_join(tiny_forward: LlamaForward) -> None:
    # Each request needs 3 pages of 16; 7 pages hold two at a time.
    engine = Engine(tiny_forward, num_pages=7, page_size=16, record_logits=True)
    specs = [(_prompt(i, 30), SamplingParams(max_tokens=6, seed=i, ignore_eos=True)) for i in range(5)]
    for i, (p, s) in enumerate(specs):
        engine.add(str(i), p, s)
    engine.step()
    assert engine.num_running == 2
    done = engine.run()
    assert engine.cache.free_pages == 7
    for i, (p, s) in enumerate(specs):
        assert done[str(i)].output_ids == _alone(tiny_forward, p, s).output_ids


@pytest.mark.parametrize(
    ("prompt", "params", "error"),
    [
        ([], SamplingParams(), InvalidInputError),
        ([256], SamplingParams(), InvalidInputError),
        ([1] * 500, SamplingParams(max_tokens=20), InvalidInputError),  # beyond 512 positions
        ([1] * 100, SamplingParams(max_tokens=100), CacheFullError),  # more than 8 pages of 16
        ([1], SamplingParams(stop=("x",)), InvalidInputError),  # stop strings without a tokenizer
    ],
)
def test_bad_requests_are_refused_before_anything_runs(
    tiny_forward: LlamaForward, prompt: list[int], params: SamplingParams, error: type[Exception]
) -> None:
    engine = Engine(tiny_forward, num_pages=8)
    with pytest.raises(error):
        engine.add("x", prompt, params)
    assert not engine.has_work and engine.cache.free_pages == 8


def test_a_duplicate_request_id_is_refused(tiny_forward: LlamaForward) -> None:
    engine = Engine(tiny_forward, num_pages=8)
    engine.add("x", [1, 2], SamplingParams())
    with pytest.raises(InvalidInputError):
        engine.add("x", [3], SamplingParams())


def test_an_aborted_request_frees_its_pages_and_the_others_get_the_tokens_they_get_alone(
    tiny_forward: LlamaForward,
) -> None:
    params = SamplingParams(max_tokens=6, seed=3, ignore_eos=True)
    engine = Engine(tiny_forward, num_pages=32)
    for rid in ("a", "b", "c"):
        engine.add(rid, _prompt(ord(rid), 9), params)
    engine.step()
    engine.step()
    assert engine.abort("b") and engine.abort("c") is True
    assert not engine.abort("b") and not engine.abort("nobody")
    engine.add("d", _prompt(7, 5), params)
    assert engine.abort("d")  # still waiting
    done = engine.run()
    assert set(done) == {"a"} and engine.cache.free_pages == 32
    assert done["a"].output_ids == _alone(tiny_forward, _prompt(ord("a"), 9), params).output_ids


def test_a_requests_logprobs_are_bitwise_the_same_alone_and_in_a_batch_and_a_verifier_recomputes_them(
    tiny_forward: LlamaForward,
) -> None:
    specs = [(_prompt(20 + i, 4 + 7 * i), SamplingParams(max_tokens=3 + i, seed=i, ignore_eos=True,
                                                         temperature=0.0 if i == 0 else 1.0,
                                                         logprobs=None if i == 2 else 5)) for i in range(4)]
    engine = Engine(tiny_forward, num_pages=128, prefill_chunk=5)
    for i, (prompt, params) in enumerate(specs):
        engine.add(str(i), prompt, params)
    done = engine.run()
    assert done["2"].logprobs is None
    for i, (prompt, params) in enumerate(specs):
        if params.logprobs is None:
            continue
        got, ref = done[str(i)], _alone(tiny_forward, prompt, params)
        assert got.logprobs is not None and ref.logprobs is not None
        assert len(got.logprobs) == len(got.output_ids)
        assert [lp.token_id for lp in got.logprobs] == list(got.output_ids)
        assert got.logprobs == ref.logprobs  # floats compared exactly: bitwise
        for lp in got.logprobs:
            assert len(lp.top) == 5 and [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
            assert lp.logprob <= 0.0
        if params.temperature == 0.0:  # greedy: the sampled token is the most likely one
            assert all(lp.top[0] == (lp.token_id, lp.logprob) for lp in got.logprobs)
        # A verifier's teacher-forced prefill gives the same rows, hence the same log probabilities.
        rows = teacher_forced_logits(tiny_forward, list(prompt) + list(got.output_ids))[len(prompt) - 1 : -1]
        again = tuple(token_logprobs(rows[j], t, 5) for j, t in enumerate(got.output_ids))
        assert again == got.logprobs


def test_tokens_stream_with_their_logprobs_when_asked(tiny_forward: LlamaForward) -> None:
    engine = Engine(tiny_forward, num_pages=32)
    engine.add("a", _prompt(5, 6), SamplingParams(max_tokens=3, logprobs=0, ignore_eos=True))
    engine.add("b", _prompt(6, 6), SamplingParams(max_tokens=3, ignore_eos=True))
    events = []
    while engine.has_work:
        events += engine.step()
    a = [e for e in events if e.request_id == "a"]
    assert all(e.logprobs is not None and e.logprobs.token_id == e.token_id and e.logprobs.top == () for e in a)
    assert all(e.logprobs is None for e in events if e.request_id == "b")
