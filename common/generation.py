"""The canonical blobs of a generation request and its output (what an LLM work receipt's input
and output hashes are keccak256 of), shared by the worker, which signs them, and the gateway,
which checks them and stores them for verifiers. UTF-8 JSON, sorted keys, no spaces.

Request: ``{"max_tokens": n, "prompt_ids": [...], "seed": s, "stop": [...], "temperature": t,
"top_k": k, "top_p": p}``: the prompt as token ids and every sampling parameter, the seed
included (when the client gives none the provider picks one, and it is part of the request).

Output: ``{"finish_reason": "stop"|"length", "output_ids": [...]}``; ``output_ids`` includes the
token that ended generation (an end-of-sequence token, or the one that completed a stop
string).

:func:`completion_text` is the text a client is answered with for an output: the decoded ids
without control tokens, cut before the first stop string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from common.text import Text

FINISH_REASONS = ("stop", "length")


class _Decoder(Protocol):
    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str: ...


def canonical_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_request(prompt_ids: Sequence[int], *, max_tokens: int, temperature: float, top_p: float, top_k: int,
                   seed: int, stop: Sequence[str]) -> bytes:
    return canonical_json({
        "max_tokens": int(max_tokens),
        "prompt_ids": [int(t) for t in prompt_ids],
        "seed": int(seed),
        "stop": list(stop),
        "temperature": float(temperature),
        "top_k": int(top_k),
        "top_p": float(top_p),
    })


def encode_output(output_ids: Sequence[int], finish_reason: str) -> bytes:
    return canonical_json({"finish_reason": finish_reason, "output_ids": [int(t) for t in output_ids]})


def completion_text(tokenizer: _Decoder, output_ids: Sequence[int], stop: Sequence[str]) -> str:
    """The answer's text: ``output_ids`` decoded without control tokens, cut before the first
    occurrence of any stop string (the engine's stop rule)."""
    text = tokenizer.decode(list(output_ids))
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(hits)] if hits else text


# ---------------------------------------------------------------------------- OpenAI request bodies
#
# Both the gateway and the provider endpoint read OpenAI's chat and completions bodies with these
# models and resolve them to the same prompt ids and sampling parameters (`resolve`), so the
# canonical request the provider signs is the one the gateway computes. Unknown fields are
# accepted and ignored, as OpenAI's API does; fields Hearth does not implement with a value
# that would change the answer are refused with a clear 400 (`UnsupportedParameterError`). Every
# text a request carries is `Text`: a lone UTF-16 surrogate is refused where the body is read.

#: completion tokens when the client names no ``max_tokens`` (capped by the context left)
DEFAULT_MAX_TOKENS = 256
#: seeds are integers in [0, 2^63 - 1] (the sampler's range)
MAX_SEED = 2**63 - 1
#: the most choices (``n``) one request may ask for
MAX_N = 8


class GenerationRequestError(ValueError):
    """A generation request Hearth refuses (400): ``reason`` is machine-readable, ``param`` the
    field at fault, as OpenAI names it."""

    def __init__(self, message: str, *, reason: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.reason, self.param = message, reason, param


class UnsupportedParameterError(GenerationRequestError):
    pass


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Text
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Text = Field(min_length=1, max_length=64)
    content: Text | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for p in self.content:
            if p.type != "text" or p.text is None:
                raise UnsupportedParameterError(f"content parts of type {p.type!r} are not supported (text is)",
                                                reason="unsupported_content", param="messages")
            parts.append(p.text)
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class _GenerationIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Text = Field(min_length=1, max_length=128, description="model name or 0x model id")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    #: not OpenAI's: keep only the k most likely tokens (0: all)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: Text | list[Text] | None = None
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: Text | None = Field(default=None, max_length=256)

    def stop_list(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4 or any(not s for s in stop):
            raise GenerationRequestError("stop must be at most 4 non-empty strings", reason="invalid_stop",
                                         param="stop")
        return tuple(stop)

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def _check_common(self) -> None:
        if self.n is not None and self.n > MAX_N:
            raise GenerationRequestError(f"n must be at most {MAX_N} (choices per request); got {self.n}",
                                         reason="invalid_n", param="n")

    def choices(self) -> int:
        """How many choices the client asked for (``n``)."""
        return self.n or 1

    def logprobs_k(self) -> int | None:
        """None: no log probabilities; ``k``: the sampled tokens' and the ``k`` most likely ones'."""
        return None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class ChatCompletionsIn(_GenerationIn):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def check(self) -> None:
        self._check_common()
        if self.top_logprobs is not None and not self.logprobs:
            raise GenerationRequestError("top_logprobs needs logprobs: true", reason="invalid_top_logprobs",
                                         param="top_logprobs")

    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def chat(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class CompletionsIn(_GenerationIn):
    prompt: Text | list[Text] | list[StrictInt] | list[list[StrictInt]]
    echo: bool | None = None
    suffix: Text | None = None
    best_of: int | None = Field(default=None, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=5)

    def check(self) -> None:
        self._check_common()
        if self.echo:
            raise UnsupportedParameterError("echo is not supported", reason="unsupported_echo", param="echo")
        if self.suffix:
            raise UnsupportedParameterError("suffix is not supported", reason="unsupported_suffix", param="suffix")
        if self.best_of not in (None, 1):
            raise UnsupportedParameterError("best_of > 1 is not supported", reason="unsupported_best_of",
                                            param="best_of")

    def logprobs_k(self) -> int | None:
        return self.logprobs


class _Tokenizer(_Decoder, Protocol):
    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_chat(self, messages: Sequence[Any]) -> list[int]: ...


class Resolved(BaseModel):
    """A generation request resolved to what the provider runs and the receipt commits to
    (the seed stays None until the provider picks one, when the client gave none)."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: tuple[str, ...]
    #: None: no log probabilities; ``k``: each sampled token's and the ``k`` most likely ones'
    #: (not in the canonical request: they do not change the output the receipt commits to)
    logprobs: int | None = None

    def encode(self, seed: int) -> bytes:
        return encode_request(self.prompt_ids, max_tokens=self.max_tokens, temperature=self.temperature,
                              top_p=self.top_p, top_k=self.top_k, seed=seed, stop=self.stop)


def resolve(body: ChatCompletionsIn | CompletionsIn, tokenizer: _Tokenizer, context: int) -> Resolved:
    """Prompt ids and sampling parameters of a request (400s as :class:`GenerationRequestError`).

    Defaults as OpenAI's: temperature 1, top_p 1, no stop; ``max_tokens`` defaults to
    :data:`DEFAULT_MAX_TOKENS`, capped by what the context leaves after the prompt.
    """
    body.check()
    if isinstance(body, ChatCompletionsIn):
        prompt = tokenizer.encode_chat(body.chat())
    else:
        p = body.prompt
        if isinstance(p, str):
            prompt = tokenizer.encode(p)
        elif p and all(isinstance(x, str) for x in p):
            if len(p) != 1:
                raise UnsupportedParameterError("one prompt per request", reason="unsupported_batch_prompt",
                                                param="prompt")
            prompt = tokenizer.encode(str(p[0]))
        elif p and all(isinstance(x, list) for x in p):
            if len(p) != 1:
                raise UnsupportedParameterError("one prompt per request", reason="unsupported_batch_prompt",
                                                param="prompt")
            prompt = [int(t) for t in p[0]]  # type: ignore[union-attr]
        else:
            prompt = [int(t) for t in p]  # type: ignore[arg-type]
        if any(not 0 <= t < tokenizer.vocab_size for t in prompt):
            raise GenerationRequestError("prompt token id outside the vocabulary", reason="invalid_prompt",
                                         param="prompt")
    if not prompt:
        raise GenerationRequestError("the prompt is empty", reason="invalid_prompt", param="prompt")
    left = context - len(prompt)
    asked = body.requested_max_tokens()
    max_tokens = min(DEFAULT_MAX_TOKENS, left) if asked is None else asked
    if left < 1 or max_tokens > left:
        raise GenerationRequestError(
            f"this model's context is {context} tokens; the prompt has {len(prompt)} and {max_tokens} more were "
            "asked for", reason="context_length_exceeded", param="max_tokens")
    return Resolved(prompt_ids=prompt, max_tokens=max_tokens,
                    temperature=1.0 if body.temperature is None else float(body.temperature),
                    top_p=1.0 if body.top_p is None else float(body.top_p), top_k=body.top_k or 0,
                    seed=body.seed, stop=body.stop_list(), logprobs=body.logprobs_k())


# ---------------------------------------------------------------------------- log probabilities
#
# A token's log probabilities as the provider's engine computes them: (sampled token id, its
# logprob, the k most likely (id, logprob), most likely first). The OpenAI shapes name tokens by
# their text (``token_text``) and bytes (``token_bytes``); one entry per output id, the ending
# token (end of sequence, or the one completing a stop string) included.

RawLogprobs = tuple[int, float, Sequence[tuple[int, float]]]


class _TokenNamer(Protocol):
    def token_text(self, token_id: int) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...


def chat_logprobs(tok: _TokenNamer, entries: Sequence[RawLogprobs]) -> list[dict[str, Any]]:
    """``choices[i].logprobs.content`` of a chat completion (or of one chunk's tokens)."""
    def one(t: int, lp: float) -> dict[str, Any]:
        return {"token": tok.token_text(t), "logprob": lp, "bytes": list(tok.token_bytes(t))}

    return [{**one(t, lp), "top_logprobs": [one(i, v) for i, v in top]} for t, lp, top in entries]


def completion_logprobs(tok: _TokenNamer, entries: Sequence[RawLogprobs], offset: int = 0) -> dict[str, Any]:
    """``choices[i].logprobs`` of a text completion (or of one chunk's tokens; ``offset``: the
    length of the completion text before them). ``top_logprobs`` holds the k most likely tokens
    and the sampled one (up to k + 1, OpenAI's rule)."""
    tokens = [tok.token_text(t) for t, _, _ in entries]
    offsets = []
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    tops = []
    for (_, lp, top), text in zip(entries, tokens, strict=True):
        d = {tok.token_text(i): v for i, v in top}
        d.setdefault(text, lp)
        tops.append(d)
    return {"tokens": tokens, "token_logprobs": [lp for _, lp, _ in entries], "top_logprobs": tops,
            "text_offset": offsets}


def check_logprobs(chat: bool, logprobs: Any, output_ids: Sequence[int], k: int | None, tok: _TokenNamer) -> None:
    """That a provider's log probabilities (the OpenAI shape, a whole answer's) name the output
    ids in order, ``k`` alternatives each, with log probabilities <= 0 sorted descending
    (ValueError otherwise). Their values cannot be checked without the model: a verifier
    recomputes them from the committed tokens."""
    if k is None:
        if logprobs is not None:
            raise ValueError("log probabilities that were not asked for")
        return
    if not isinstance(logprobs, dict):
        raise ValueError("no log probabilities")
    if chat:
        content = logprobs.get("content")
        if not isinstance(content, list) or len(content) != len(output_ids):
            raise ValueError("not one log probability entry per output token")
        for e, t in zip(content, output_ids, strict=True):
            top = e["top_logprobs"]
            values = [float(x["logprob"]) for x in top]
            if e["token"] != tok.token_text(t) or e["bytes"] != list(tok.token_bytes(t)) or len(top) != k or \
                    values != sorted(values, reverse=True) or not all(v <= 0 for v in [float(e["logprob"]), *values]):
                raise ValueError("a log probability entry does not match its output token")
    else:
        tokens, lps, tops = logprobs.get("tokens"), logprobs.get("token_logprobs"), logprobs.get("top_logprobs")
        if tokens != [tok.token_text(t) for t in output_ids] or not isinstance(lps, list) or \
                not isinstance(tops, list) or not len(lps) == len(tops) == len(output_ids) or \
                not all(float(v) <= 0 for v in lps) or \
                not all(isinstance(d, dict) and len(d) <= k + 1 for d in tops):
            raise ValueError("the log probabilities do not match the output tokens")
