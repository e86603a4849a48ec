"""OpenAI request bodies resolved to prompt ids and sampling parameters (what the gateway and
the provider both compute), the answer's text, and what a stream holds back."""

from __future__ import annotations

import pytest

from common import generation as gen
from common.chat_tokenizer import ChatTokenizer
from worker.model.llm import ChatTokenizer as WorkerChatTokenizer
from worker.serving.generate import _held_back


@pytest.fixture(scope="module")
def tok(chat_tokenizer: WorkerChatTokenizer) -> ChatTokenizer:
    """The worker's tokenizer (the session's) is the common class with the worker's errors."""
    assert isinstance(chat_tokenizer, ChatTokenizer)
    return chat_tokenizer


def chat(**kw: object) -> gen.ChatCompletionsIn:
    return gen.ChatCompletionsIn.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def test_defaults_are_openais_and_unknown_fields_are_accepted(tok: ChatTokenizer) -> None:
    r = gen.resolve(chat(frequency_penalty=0.5, whatever={"x": 1}), tok, 8192)
    assert r.prompt_ids == tok.encode_chat([{"role": "user", "content": "hi"}])
    assert (r.max_tokens, r.temperature, r.top_p, r.top_k, r.seed, r.stop) == (256, 1.0, 1.0, 0, None, ())
    r = gen.resolve(chat(max_tokens=9, max_completion_tokens=5, temperature=0, seed=7, stop="\n"), tok, 8192)
    assert (r.max_tokens, r.temperature, r.seed, r.stop) == (5, 0.0, 7, ("\n",))
    assert r.encode(7) == gen.encode_request(r.prompt_ids, max_tokens=5, temperature=0.0, top_p=1.0, top_k=0,
                                             seed=7, stop=("\n",))
    parts = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]}])
    assert gen.resolve(parts, tok, 8192).prompt_ids == r.prompt_ids


def test_completions_take_text_or_token_ids(tok: ChatTokenizer) -> None:
    ids = tok.encode("Once upon a time")
    for prompt in ("Once upon a time", ["Once upon a time"], ids, [ids]):
        body = gen.CompletionsIn.model_validate({"model": "m", "prompt": prompt, "max_tokens": 3})
        assert gen.resolve(body, tok, 8192).prompt_ids == ids
    with pytest.raises(gen.GenerationRequestError) as exc:
        gen.resolve(gen.CompletionsIn.model_validate({"model": "m", "prompt": [10**6]}), tok, 8192)
    assert exc.value.reason == "invalid_prompt"


@pytest.mark.parametrize(("body", "reason", "param"), [
    ({"n": 9}, "invalid_n", "n"),
    ({"top_logprobs": 2}, "invalid_top_logprobs", "top_logprobs"),
    ({"max_tokens": 8190}, "context_length_exceeded", "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "invalid_stop", "stop"),
])
def test_what_is_not_implemented_or_does_not_fit_is_refused_naming_the_parameter(
        tok: ChatTokenizer, body: dict[str, object], reason: str, param: str) -> None:
    with pytest.raises(gen.GenerationRequestError) as exc:
        gen.resolve(chat(**body), tok, 8192)
    assert (exc.value.reason, exc.value.param) == (reason, param)


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "abc\ud800def"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "x\udfff"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "te\udc00xt", "text": "hi"}]}]},
    {"messages": [{"role": "user", "content": "hi"}], "stop": "\udc00"},
    {"messages": [{"role": "user", "content": "hi"}], "stop": ["ok", "\udbff"]},
    {"prompt": "abc\ud800def"},
    {"prompt": ["x\udfff"]},
], ids=["message", "text part", "part type", "stop", "stop list", "prompt", "prompt list"])
def test_a_lone_surrogate_in_any_text_of_a_request_is_refused_where_the_body_is_read(body: dict[str, object]) -> None:
    """As FastAPI validates a body (parsed by ``json.loads``, which turns the escape ``\\ud800``
    into a lone surrogate): the tokenizer raises a TypeError on such text, which was a 500 on the
    gateway and on the provider endpoint, both of which read bodies with these models."""
    from pydantic import ValidationError

    model = gen.ChatCompletionsIn if "messages" in body else gen.CompletionsIn
    with pytest.raises(ValidationError) as exc:
        model.model_validate({"model": "m", **body})
    assert "invalid_unicode" in {e["type"] for e in exc.value.errors()}, exc.value.errors()


def test_the_answer_text_ends_before_the_first_stop_string(tok: ChatTokenizer) -> None:
    ids = tok.encode(" 6, 7, 8, 9")
    assert gen.completion_text(tok, ids, ()) == " 6, 7, 8, 9"
    assert gen.completion_text(tok, ids, (", 8", "7")) == " 6, "
    assert gen.completion_text(tok, [*ids, tok.eos_id], ()) == " 6, 7, 8, 9"


def test_a_stream_holds_back_the_start_of_a_stop_string_and_incomplete_characters() -> None:
    assert _held_back(" 6, 7", (", 8",)) == 0
    assert _held_back(" 6, 7,", (", 8",)) == 1
    assert _held_back(" 6, 7, ", (", 8",)) == 2
    assert _held_back("abc\ufffd", ()) == 1
    assert _held_back("abc", ("zz", "c")) == 0


def test_n_and_logprobs_resolve_to_choices_and_the_number_of_alternatives(tok: ChatTokenizer) -> None:
    assert chat(n=8).choices() == 8 and chat().choices() == 1
    assert gen.resolve(chat(), tok, 8192).logprobs is None
    assert gen.resolve(chat(logprobs=True), tok, 8192).logprobs == 0
    assert gen.resolve(chat(logprobs=True, top_logprobs=3), tok, 8192).logprobs == 3
    assert gen.resolve(chat(logprobs=False), tok, 8192).logprobs is None
    body = gen.CompletionsIn.model_validate({"model": "m", "prompt": "hi", "logprobs": 2})
    r = gen.resolve(body, tok, 8192)
    assert r.logprobs == 2
    # The canonical request (what the receipt's input hash covers) does not change with logprobs.
    assert r.encode(1) == gen.resolve(gen.CompletionsIn.model_validate({"model": "m", "prompt": "hi"}), tok,
                                      8192).encode(1)


def test_logprobs_take_openais_shapes_naming_tokens_by_their_text_and_bytes(tok: ChatTokenizer) -> None:
    ids = tok.encode(" 日本")  # a character split over byte-level tokens
    entries = [(t, -0.5, [(t, -0.5), (tok.eos_id, -2.0)]) for t in ids]
    content = gen.chat_logprobs(tok, entries)
    assert b"".join(bytes(e["bytes"]) for e in content).decode() == " 日本"
    assert content[0]["top_logprobs"][1] == {"token": "<|im_end|>", "logprob": -2.0, "bytes": list(b"<|im_end|>")}
    gen.check_logprobs(True, {"content": content}, ids, 2, tok)
    legacy = gen.completion_logprobs(tok, [(t, -0.5, [(tok.eos_id, -0.1)]) for t in ids], offset=3)
    assert legacy["text_offset"][0] == 3 and legacy["token_logprobs"] == [-0.5] * len(ids)
    assert all(len(d) == 2 for d in legacy["top_logprobs"])  # the top one and the sampled one
    gen.check_logprobs(False, legacy, ids, 1, tok)
    with pytest.raises(ValueError):
        gen.check_logprobs(True, {"content": content[1:]}, ids, 2, tok)
    with pytest.raises(ValueError):
        gen.check_logprobs(True, {"content": content}, ids, None, tok)
