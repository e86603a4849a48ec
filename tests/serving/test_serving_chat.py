"""Text generation on the serving plane end to end: the official ``openai`` client through the
gateway to a provider endpoint process that serves MiniLM and SmolLM2 in one process (beside one
that serves MiniLM only and never loads SmolLM2). Chat, streaming with usage, seeded sampling
reproduced exactly, stop sequences, ``max_tokens`` ending with ``length``, refusals of what is
not implemented; every answer's receipt commits to prompt ids, parameters with the seed, output
ids and finish reason, and the provider is paid exactly the receipts' actual values (not the
``max_tokens`` caps the gateway signed); a provider killed mid-stream ends the stream with an
error event and nobody pays or is paid for it.

Generations are a few tokens each: SmolLM2 decodes on one CPU thread here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from eth_utils import keccak
from serving_stack import ServingStack, api_key, serving_stack

from common import generation as gen
from common.chat_tokenizer import ChatTokenizer
from contracts.serving import work_receipt_from_json

LLM = "SmolLM2-135M-Instruct"
LLM_PRICES = {"provider": 300, "verifier": 250}
COUNT = "1, 2, 3, 4, 5,"  # greedy SmolLM2 continues " 6, 7, 8, 9,"


@pytest.fixture(scope="module")
def llm_stack(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    both = {"HEARTH_SERVING_MODELS": f"all-MiniLM-L6-v2,{LLM}", "HEARTH_SERVING_LLM_PRICE": "300",
            "HEARTH_SERVING_LLM_KV_PAGES": "64", "HEARTH_SERVING_COLLECT_THRESHOLD": "1"}
    with serving_stack(devnet, chain, tmp_path_factory.mktemp("chat"),
                       {"provider": ("eu", 200, both),
                        "verifier": ("us", 100, {"HEARTH_SERVING_COLLECT_THRESHOLD": "1"})},
                       model_index=1, routed=1) as st:
        yield st


@pytest.fixture(scope="module")
def key(llm_stack: ServingStack) -> str:
    return api_key(llm_stack, "client")


@pytest.fixture(scope="module")
def tok() -> ChatTokenizer:
    return ChatTokenizer.from_gguf()


def client(stack: ServingStack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def hearth(obj: Any) -> dict[str, Any]:
    h = obj.model_extra.get("hearth") if obj.model_extra else None
    assert isinstance(h, dict), obj
    return h


def served(stack: ServingStack) -> dict[str, Any]:
    from gateway.serving import served_requests

    return {r.request_id: r for r in served_requests(stack.ctx)}


def spent(stack: ServingStack, key: str) -> int:
    from gateway.store import ApiKey, session

    with session(stack.ctx.db_engine) as db:
        k = db.get(ApiKey, "0x" + keccak(text=key).hex())
        assert k is not None
        return int(k.spent)


def check_receipt(stack: ServingStack, h: dict[str, Any], prompt_ids: list[int], max_tokens: int,
                  temperature: float, stop: list[str], usage: Any, finish_reason: str) -> None:
    """The receipt commits to the prompt ids, the parameters with the seed, the output ids and the
    finish reason; units and value are the actual ones (prompt + output tokens at the quote)."""
    rec = work_receipt_from_json(h["receipt"])
    assert rec.model_id.hex() == stack.devnet.manifest.models[1].model_id[2:]
    want_in = gen.encode_request(prompt_ids, max_tokens=max_tokens, temperature=temperature, top_p=1.0, top_k=0,
                                 seed=h["seed"], stop=stop)
    assert rec.input_hash == keccak(want_in)
    assert rec.output_hash == keccak(gen.encode_output(h["output_ids"], finish_reason))
    assert len(h["output_ids"]) == usage.completion_tokens
    row = served(stack)[h["request_id"]]
    assert row.input_blob == "0x" + keccak(want_in).hex() and row.output_hash == "0x" + rec.output_hash.hex()
    assert usage.prompt_tokens == len(prompt_ids)
    assert rec.units == usage.prompt_tokens + usage.completion_tokens == usage.total_tokens
    assert rec.value == rec.units * LLM_PRICES["provider"] == int(h["cost"]) == row.value
    assert h["provider"] == stack.providers["provider"].address


def test_a_chat_completion_through_the_gateway_is_receipted_at_its_actual_length(
        llm_stack: ServingStack, key: str, tok: ChatTokenizer) -> None:
    c = client(llm_stack, key)
    before = spent(llm_stack, key)
    messages = [{"role": "user", "content": "Count from 1 to 10."}]
    r = c.chat.completions.create(model=LLM, messages=messages, max_tokens=4, temperature=0,  # type: ignore[arg-type]
                                  extra_body={"an_unknown_field": True})
    assert r.object == "chat.completion" and r.model == LLM
    assert r.choices[0].finish_reason == "length" and r.usage is not None and r.usage.completion_tokens == 4
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    h = hearth(r)
    prompt = tok.encode_chat(messages)
    check_receipt(llm_stack, h, prompt, 4, 0.0, [], r.usage, "length")
    # The gateway signed for the cap (prompt + max_tokens) and charged the actual value.
    assert spent(llm_stack, key) - before == int(h["cost"]) == (len(prompt) + 4) * LLM_PRICES["provider"]


def test_a_streamed_chat_completion_arrives_chunk_by_chunk_with_usage_and_reproduces_with_its_seed(
        llm_stack: ServingStack, key: str, tok: ChatTokenizer) -> None:
    c = client(llm_stack, key)
    messages = [{"role": "user", "content": "Write a story about a dragon."}]
    chunks = list(c.chat.completions.create(model=LLM, messages=messages, max_tokens=4,  # type: ignore[call-overload]
                                            temperature=1.0, stream=True, stream_options={"include_usage": True}))
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    content_chunks = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(content_chunks) >= 2, "the answer came in one piece, not streamed"
    final = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(final) == 1
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices and usage.completion_tokens >= 1
    h = hearth(final[0])
    check_receipt(llm_stack, h, tok.encode_chat(messages), 4, 1.0, [], usage, final[0].choices[0].finish_reason or "")
    # The provider picked the seed; the same request with that seed gives the same tokens.
    again = c.chat.completions.create(model=LLM, messages=messages, max_tokens=4,  # type: ignore[arg-type]
                                      temperature=1.0, seed=h["seed"])
    assert again.choices[0].message.content == text
    assert work_receipt_from_json(hearth(again)["receipt"]).output_hash == \
        work_receipt_from_json(h["receipt"]).output_hash


def test_seeded_sampling_is_reproduced_exactly_and_another_seed_samples_differently(
        llm_stack: ServingStack, key: str) -> None:
    c = client(llm_stack, key)
    outs = []
    for seed in (1234, 1234, 99):
        r = c.completions.create(model=LLM, prompt="Once upon a time", max_tokens=4, temperature=1.5, seed=seed)
        h = hearth(r)
        assert h["seed"] == seed
        outs.append((r.choices[0].text, work_receipt_from_json(h["receipt"]).output_hash))
    assert outs[0] == outs[1]
    assert outs[2] != outs[0]


def test_a_stop_sequence_ends_the_streamed_completion_before_it(llm_stack: ServingStack, key: str) -> None:
    """The stream holds back ", " until " 8" decides it, and the gateway checks that the streamed
    text is the text of the receipted tokens cut at the stop string."""
    c = client(llm_stack, key)
    chunks = list(c.completions.create(model=LLM, prompt=COUNT, max_tokens=12, temperature=0, stop=[", 8", "zz"],
                                       stream=True))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == " 6, 7"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"


def test_what_is_not_implemented_is_refused_with_a_clear_400_and_charges_nothing(
        llm_stack: ServingStack, key: str) -> None:
    c = client(llm_stack, key)
    before, n_served = spent(llm_stack, key), len(served(llm_stack))
    msgs = [{"role": "user", "content": "hi"}]
    for kwargs, reason in (({"n": 9}, "invalid_n"), ({"top_logprobs": 2}, "invalid_top_logprobs"),
                           ({"max_tokens": 9000}, "context_length_exceeded")):
        with pytest.raises(openai.BadRequestError) as exc:
            c.chat.completions.create(model=LLM, messages=msgs, **kwargs)  # type: ignore[arg-type, call-overload]
        assert exc.value.body["reason"] == reason, exc.value.body  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(model="all-MiniLM-L6-v2", messages=msgs)  # type: ignore[arg-type]
    assert exc.value.body["reason"] == "model_not_generative"  # type: ignore[index]
    assert spent(llm_stack, key) == before and len(served(llm_stack)) == n_served


def test_a_chat_completion_sent_again_with_its_idempotency_key_is_answered_once_and_charged_once(
        llm_stack: ServingStack, key: str) -> None:
    c = client(llm_stack, key)
    before, n_served = spent(llm_stack, key), len(served(llm_stack))
    msgs = [{"role": "user", "content": "Name a colour."}]
    ask = {"model": LLM, "messages": msgs, "max_tokens": 3, "temperature": 1.0,
           "extra_headers": {"Idempotency-Key": "chat-lost-answer"}}  # sampled: a second run would differ
    first = c.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
    again = c.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert again.http_response.json() == first.http_response.json()
    h = hearth(first.parse())
    assert len(served(llm_stack)) == n_served + 1 and spent(llm_stack, key) - before == int(h["cost"]) > 0
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(model=LLM, messages=msgs, max_tokens=3, stream=True,  # type: ignore[arg-type]
                                  extra_headers={"Idempotency-Key": "chat-streamed"})
    assert exc.value.body["reason"] == "idempotency_unsupported_for_streams"  # type: ignore[index]
    assert len(served(llm_stack)) == n_served + 1 and spent(llm_stack, key) - before == int(h["cost"])


def check_top_logprobs(token: str, logprob: float, top: list[tuple[str, float]], k: int, greedy: bool) -> None:
    import math

    assert len(top) == k and [v for _, v in top] == sorted((v for _, v in top), reverse=True)
    assert logprob <= 0.0 and math.exp(logprob) <= 1.0 and all(v <= 0.0 for _, v in top)
    if token in dict(top):
        assert dict(top)[token] == logprob  # the same number, whichever list it is read from
    if greedy:
        assert top[0] == (token, logprob)


def test_chat_logprobs_name_every_output_token_with_its_most_likely_alternatives(
        llm_stack: ServingStack, key: str, tok: ChatTokenizer) -> None:
    c = client(llm_stack, key)
    msgs = [{"role": "user", "content": "Count from 1 to 10."}]
    for temperature in (0.0, 1.0):
        r = c.chat.completions.create(model=LLM, messages=msgs, max_tokens=4, temperature=temperature,  # type: ignore[arg-type]
                                      seed=3, logprobs=True, top_logprobs=3)
        h = hearth(r)
        lp = r.choices[0].logprobs
        assert lp is not None and lp.content is not None and len(lp.content) == len(h["output_ids"])
        for entry, t in zip(lp.content, h["output_ids"], strict=True):
            assert entry.token == tok.token_text(t) and entry.bytes == list(tok.token_bytes(t))
            check_top_logprobs(entry.token, entry.logprob, [(e.token, e.logprob) for e in entry.top_logprobs], 3,
                               temperature == 0.0)
    # Streamed: each chunk carries its tokens' entries; together they are the whole answer's.
    chunks: list[Any] = list(c.chat.completions.create(model=LLM, messages=msgs,  # type: ignore[call-overload, arg-type]
                                                       max_tokens=4, temperature=0, logprobs=True, top_logprobs=3,
                                                       stream=True))
    streamed = [e for ch in chunks if ch.choices and ch.choices[0].logprobs
                for e in ch.choices[0].logprobs.content or []]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in lp_greedy(c, msgs)]


def lp_greedy(c: openai.OpenAI, msgs: list[dict[str, str]]) -> list[Any]:
    r = c.chat.completions.create(model=LLM, messages=msgs, max_tokens=4, temperature=0,  # type: ignore[arg-type]
                                  logprobs=True, top_logprobs=3)
    assert r.choices[0].logprobs is not None and r.choices[0].logprobs.content is not None
    return r.choices[0].logprobs.content


def test_completion_logprobs_take_the_legacy_shape_with_the_sampled_token_among_the_top(
        llm_stack: ServingStack, key: str) -> None:
    c = client(llm_stack, key)
    r = c.completions.create(model=LLM, prompt=COUNT, max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(hearth(r)["output_ids"])
    assert "".join(lp.tokens).startswith(r.choices[0].text)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        ranked = sorted(top.items(), key=lambda kv: -kv[1])
        check_top_logprobs(token, value, ranked[:2], 2, greedy=True)


def test_n_choices_are_n_seeded_requests_charged_as_their_sum(llm_stack: ServingStack, key: str) -> None:
    c = client(llm_stack, key)
    before, n_served = spent(llm_stack, key), len(served(llm_stack))
    r = c.completions.create(model=LLM, prompt="Once upon a time", max_tokens=4, temperature=1.5, seed=41, n=2,
                             logprobs=1)
    assert [ch.index for ch in r.choices] == [0, 1]
    h = hearth(r)
    per = h["choices"]
    assert [p["seed"] for p in per] == [41, 42] and len({p["request_id"] for p in per}) == 2
    cost = sum(int(p["cost"]) for p in per)
    assert int(h["cost"]) == cost and spent(llm_stack, key) - before == cost
    assert len(served(llm_stack)) == n_served + 2
    assert r.usage is not None and r.usage.completion_tokens == sum(len(p["output_ids"]) for p in per)
    assert r.usage.total_tokens * LLM_PRICES["provider"] == cost
    for i, seed in enumerate((41, 42)):
        one = c.completions.create(model=LLM, prompt="Once upon a time", max_tokens=4, temperature=1.5, seed=seed,
                                   logprobs=1)
        assert one.choices[0].text == r.choices[i].text
        assert hearth(one)["output_ids"] == per[i]["output_ids"]
        mine, theirs = one.choices[0].logprobs, r.choices[i].logprobs
        assert mine is not None and theirs is not None
        assert mine.token_logprobs == theirs.token_logprobs
    assert per[0]["output_ids"] != per[1]["output_ids"]


def test_n_choices_that_the_providers_refuse_charge_nothing_and_a_provider_refuses_n_itself(
        llm_stack: ServingStack, key: str) -> None:
    import httpx

    c = client(llm_stack, key)
    before, n_served = spent(llm_stack, key), len(served(llm_stack))
    with pytest.raises(openai.BadRequestError) as exc:  # fits the context, not the provider's 64-page KV cache
        c.completions.create(model=LLM, prompt="Once upon a time", max_tokens=2000, n=2, seed=1)
    assert exc.value.body["reason"] == "context_length_exceeded"  # type: ignore[index]
    assert spent(llm_stack, key) == before and len(served(llm_stack)) == n_served
    r = httpx.post(f"{llm_stack.providers['provider'].url}/v1/completions",
                   json={"model": LLM, "prompt": "hi", "n": 2}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["reason"] == "unsupported_n"
    assert "one request per choice" in r.json()["error"]["message"]


def second_answer_wrong(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The gateway finds the second provider answer it checks wrong, as from a cheating provider
    (its receipt's output hash); the others are checked for real. Returns the calls so far."""
    import threading

    from gateway import generation
    from gateway.serving import AnswerError

    real, lock, calls = generation.check_answer, threading.Lock(), [0]

    def check(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls[0] += 1
            k = calls[0]
        if k == 2:
            raise AnswerError("the work receipt's outputHash do not match")
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "check_answer", check)
    return calls


def key_for_two_choices(llm_stack: ServingStack, tok: ChatTokenizer, prompt: str) -> tuple[str, openai.OpenAI]:
    """A fresh key (and its client) whose cap holds the reservations of two choices of ``prompt``
    with ``max_tokens=3``, and not three."""
    each = (len(tok.encode(prompt)) + 3) * LLM_PRICES["provider"]
    key = api_key(llm_stack, "client", cap=2 * each + each // 2)
    return key, client(llm_stack, key)


def test_n_choices_of_which_one_fails_charge_nothing_and_release_every_reservation(
        llm_stack: ServingStack, tok: ChatTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider answers both choices, one answer is wrong: the client gets the error and pays
    nothing, not even for the good choice; the gateway records neither, and gives both
    reservations back (the key's cap holds two choices' reservations and not three)."""
    prompt = "Once upon a time"
    key, c = key_for_two_choices(llm_stack, tok, prompt)
    n_served = len(served(llm_stack))
    calls = second_answer_wrong(monkeypatch)
    with pytest.raises(openai.InternalServerError) as exc:
        c.completions.create(model=LLM, prompt=prompt, max_tokens=3, temperature=1.0, seed=7, n=2)
    assert calls[0] == 2
    assert isinstance(exc.value.body, dict) and exc.value.body["reason"] == "bad_provider_answer"
    assert "outputHash" in str(exc.value.body["message"])
    assert spent(llm_stack, key) == 0 and len(served(llm_stack)) == n_served
    monkeypatch.undo()
    r = c.completions.create(model=LLM, prompt=prompt, max_tokens=3, temperature=1.0, seed=7, n=2)
    assert len(r.choices) == 2 and spent(llm_stack, key) == int(hearth(r)["cost"]) > 0
    assert len(served(llm_stack)) == n_served + 2


def test_n_streamed_choices_come_interleaved_by_index_as_the_unstreamed_n_with_the_same_seed(
        llm_stack: ServingStack, key: str) -> None:
    c = client(llm_stack, key)
    before, n_served = spent(llm_stack, key), len(served(llm_stack))
    msgs = [{"role": "user", "content": "Write a story about a dragon."}]
    ask: dict[str, Any] = {"model": LLM, "messages": msgs, "max_tokens": 3, "temperature": 1.0, "seed": 11, "n": 2}
    chunks = list(c.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert len({ch.id for ch in chunks}) == 1
    texts = {i: "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices and ch.choices[0].index == i)
             for i in (0, 1)}
    finals = {ch.choices[0].index: ch for ch in chunks if ch.choices and ch.choices[0].finish_reason}
    assert sorted(finals) == [0, 1] and all(len(ch.choices) == 1 for ch in chunks if ch.choices)
    per = [hearth(finals[i]) for i in (0, 1)]
    assert [p["seed"] for p in per] == [11, 12] and len({p["request_id"] for p in per}) == 2
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.completion_tokens == sum(len(p["output_ids"]) for p in per)
    cost = sum(int(p["cost"]) for p in per)
    assert usage.total_tokens * LLM_PRICES["provider"] == cost
    assert spent(llm_stack, key) - before == cost and len(served(llm_stack)) == n_served + 2
    r = c.chat.completions.create(**ask)
    assert [ch.message.content for ch in r.choices] == [texts[0], texts[1]]
    assert [p["output_ids"] for p in hearth(r)["choices"]] == [p["output_ids"] for p in per]


def test_n_streamed_choices_of_which_one_breaks_end_with_an_error_and_charge_nothing(
        llm_stack: ServingStack, tok: ChatTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """One choice's receipt is wrong at the end of its stream: the whole stream ends with an
    error event, neither choice is recorded or charged, both reservations come back."""
    prompt = "Once upon a time"
    key, c = key_for_two_choices(llm_stack, tok, prompt)
    n_served = len(served(llm_stack))
    calls = second_answer_wrong(monkeypatch)
    ask: dict[str, Any] = {"model": LLM, "prompt": prompt, "max_tokens": 3, "temperature": 1.0, "seed": 7, "n": 2,
                           "stream": True}
    with pytest.raises(openai.APIError) as exc:
        for _ in c.completions.create(**ask):
            pass
    assert calls[0] == 2 and "nothing was charged" in str(exc.value.message)
    assert isinstance(exc.value.body, dict) and exc.value.body["reason"] == "bad_provider_answer"
    assert spent(llm_stack, key) == 0 and len(served(llm_stack)) == n_served
    monkeypatch.undo()
    chunks = list(c.completions.create(**ask))
    assert sorted(ch.choices[0].index for ch in chunks if ch.choices and ch.choices[0].finish_reason) == [0, 1]
    assert spent(llm_stack, key) > 0 and len(served(llm_stack)) == n_served + 2


def test_n_streamed_choices_one_of_which_breaks_off_mid_stream_or_before_it_opens_charge_nothing(
        llm_stack: ServingStack, tok: ChatTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection to the provider of one of two streams drops after its first piece, while the
    other streams: the client has both choices' pieces, then the error event, and pays nothing.
    Then the second stream fails to open at all: a plain error, nothing charged, the opened
    stream closed."""
    import httpx

    from gateway import generation

    prompt = "Once upon a time"
    each = (len(tok.encode(prompt)) + 4) * LLM_PRICES["provider"]
    key = api_key(llm_stack, "client", cap=2 * each + each // 2)
    c = client(llm_stack, key)
    n_served = len(served(llm_stack))
    ask: dict[str, Any] = {"model": LLM, "prompt": prompt, "max_tokens": 4, "temperature": 1.0, "seed": 3, "n": 2,
                           "stream": True}
    real_read, real_forward, calls = generation._read_choice, generation._forward, [0, 0]
    router, llm = llm_stack.ctx.serving.router, llm_stack.providers["provider"]
    inflight = router.stats[llm.address].inflight

    async def drops_after_one_piece(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        k, pieces = calls[0], 0
        async for piece in real_read(*args, **kwargs):
            if k == 2 and pieces == 1:
                raise httpx.ReadError("connection reset by peer")
            pieces += 1
            yield piece

    monkeypatch.setattr(generation, "_read_choice", drops_after_one_piece)
    got: list[int] = []
    with pytest.raises(openai.APIError) as exc:
        for ch in c.completions.create(**ask):
            got += [ch.choices[0].index] if ch.choices and ch.choices[0].text else []
    assert exc.value.body["reason"] == "provider_failed_mid_stream"  # type: ignore[index]
    assert "connection reset" in str(exc.value.message) and 1 in got
    assert spent(llm_stack, key) == 0 and len(served(llm_stack)) == n_served
    assert router.stats[llm.address].inflight == inflight  # the other stream was closed
    monkeypatch.undo()

    async def second_does_not_open(*args: Any, **kwargs: Any) -> Any:
        calls[1] += 1
        if calls[1] == 2:
            from gateway.serving import NoProviderAnsweredError

            raise NoProviderAnsweredError("provider 0x... is unreachable: connection refused")
        return await real_forward(*args, **kwargs)

    monkeypatch.setattr(generation, "_forward", second_does_not_open)
    with pytest.raises(openai.InternalServerError) as exc2:
        c.completions.create(**ask)
    assert exc2.value.body["reason"] == "no_provider_answered"  # type: ignore[index]
    assert spent(llm_stack, key) == 0 and len(served(llm_stack)) == n_served
    assert router.stats[llm.address].inflight == inflight  # every provider stream opened was closed
    monkeypatch.undo()
    chunks = list(c.completions.create(**ask))  # both reservations back: two choices fit the cap again
    assert sorted(ch.choices[0].index for ch in chunks if ch.choices and ch.choices[0].finish_reason) == [0, 1]
    assert spent(llm_stack, key) > 0 and len(served(llm_stack)) == n_served + 2


def test_the_provider_takes_only_a_receipt_for_the_cap_of_prompt_plus_max_tokens(
        llm_stack: ServingStack, tok: ChatTokenizer) -> None:
    import secrets

    import httpx

    from contracts.serving import PAYMENT_HEADER, encode_payment
    from contracts.settlement import PaymentReceipt, sign_payment_receipt

    p = llm_stack.providers["provider"]
    s = llm_stack.settlement()
    messages = [{"role": "user", "content": "hi"}]
    cap = (len(tok.encode_chat(messages)) + 5) * LLM_PRICES["provider"]
    for value in (cap - LLM_PRICES["provider"], cap + 1):
        pr = PaymentReceipt(llm_stack.address("client"), p.address, secrets.token_bytes(32), value, int(time.time()))
        sig = sign_payment_receipt(llm_stack.ctx.serving.signer_key, pr, s.chain_id, s.escrow.address)
        r = httpx.post(f"{p.url}/v1/chat/completions", json={"model": LLM, "messages": messages, "max_tokens": 5},
                       headers={PAYMENT_HEADER: encode_payment(pr, sig)}, timeout=30)
        assert r.status_code == 402, r.text
        assert r.json()["error"]["reason"] == "wrong_value" and r.json()["error"]["details"]["expected"] == str(cap)
    r = httpx.post(f"{p.url}/v1/chat/completions", json={"model": LLM, "messages": messages}, timeout=30)
    assert r.status_code == 402 and r.json()["error"]["reason"] == "payment_missing"
    r = httpx.post(f"{llm_stack.providers['verifier'].url}/v1/chat/completions",
                   json={"model": LLM, "messages": messages}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["reason"] == "model_not_found"  # an embeddings-only node


def test_the_provider_collects_exactly_the_receipts_actual_values(llm_stack: ServingStack, key: str) -> None:
    s = llm_stack.settlement()
    payer = llm_stack.address("client")
    p = llm_stack.providers["provider"]
    answered = [r for r in served(llm_stack).values() if r.provider == p.address]
    want = sum(r.value for r in answered)
    assert answered and want > 0
    end = time.monotonic() + 40
    while s.lane(payer, p.address).collected != want and time.monotonic() < end:
        time.sleep(0.3)
    assert s.lane(payer, p.address).collected == want
    from gateway.serving import served_requests

    # the module's key paid exactly its own served requests (others ran on keys of their own)
    mine = served_requests(llm_stack.ctx, "0x" + keccak(text=key).hex())
    assert mine and spent(llm_stack, key) == sum(r.value for r in mine)


def test_the_demos_streamed_chats_are_all_counted_with_their_provider_cost_and_timings(
        llm_stack: ServingStack, key: str) -> None:
    """`make demo`'s chat part (`run_chat`, `print_chat`) on this stack."""
    import io

    from rich.console import Console

    from deploy.demo_serving import ProviderShare, print_chat, run_chat

    res = run_chat(llm_stack.base_url, [key], 3, concurrency=3, max_tokens=3)
    assert res.failures == {} and len(res.answers) == 3
    llm = llm_stack.providers["provider"]
    for a in res.answers:
        assert a.provider == llm.address and 1 <= a.completion_tokens <= 3 and a.text
        assert a.cost == (a.prompt_tokens + a.completion_tokens) * LLM_PRICES["provider"]
        assert 0 < a.ttft_ms <= a.total_ms <= res.seconds * 1000
    out = io.StringIO()
    print_chat(Console(file=out, width=200), res, {llm.address: ProviderShare(llm.address, "eu", 300)})
    text = out.getvalue()
    assert "3 of 3 streamed chat completions" in text
    assert text.count(f"{llm.address[:6]}…{llm.address[-4:]}") == 3 and "failed" not in text


def test_a_provider_killed_mid_stream_ends_the_stream_with_an_error_and_is_not_paid(
        llm_stack: ServingStack, key: str) -> None:
    """Last in the module: it kills the only SmolLM2 provider."""
    c = client(llm_stack, key)
    p = llm_stack.providers["provider"]
    before, n_served = spent(llm_stack, key), len(served(llm_stack))
    leaves_before = p.status()["leaves"]
    stream = c.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "Write a long story about a dragon."}],  # type: ignore[arg-type]
        max_tokens=200, temperature=1.0, seed=5, stream=True)
    got = 0
    with pytest.raises(openai.APIError) as exc:
        for ch in stream:
            if ch.choices and ch.choices[0].delta.content:
                got += 1
                if got == 2:
                    p.kill9()
    assert got >= 2
    assert "nothing was charged" in str(exc.value.message)
    assert isinstance(exc.value.body, dict) and exc.value.body["reason"] == "provider_failed_mid_stream"
    # The gateway recorded nothing and gave the reservation back: the client pays nothing ...
    assert len(served(llm_stack)) == n_served
    assert spent(llm_stack, key) == before
    # ... and the provider holds no leaf for it: nothing to put in a batch, no voucher covers it.
    db = sqlite3.connect(str(p.data_dir / f"serving-{p.address.lower()}.sqlite"))
    try:
        assert db.execute("SELECT COUNT(*) FROM leaves").fetchone()[0] == leaves_before
    finally:
        db.close()
