"""Continuous-batching generation engine over the paged KV cache.

Every `step()` runs one forward over a batch that is rebuilt from scratch: one token for each
running request that is decoding, then chunks of at most `prefill_chunk` prompt tokens for
requests still reading their prompt, within `max_batch_tokens`. Requests join (when their pages
fit) and leave (when they finish) between any two steps. All pages a request can need
(`prompt + max_tokens` positions) are reserved when it joins, so no request is ever preempted.

Because the forward is batch-invariant and sampling depends only on (logits, params, position),
a request's tokens and logits bytes do not depend on what else runs, in which order, or how its
prompt was chunked; `teacher_forced_logits` recomputes the logits of a finished request in one
prefill of prompt + output, which is how a verifier re-executes it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from worker.model.errors import InvalidInputError
from worker.model.llm.kv_cache import CacheFullError, PagedKVCache
from worker.model.llm.sampling import SamplingParams, TokenLogprobs, sample, token_logprobs
from worker.model.llm.tokenizer import ChatTokenizer
from worker.model.llm.torch_path import LlamaForward, SeqChunk

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """A finished request: prompt and output token ids, text, why it ended, optional logits.

    `output_ids` includes the token that ended it (an end-of-sequence token, or the one that
    completed a stop string); `text` excludes control tokens and everything from a stop string on.
    `logits` (when recorded) is `[len(output_ids), vocab]` fp32: row `i` produced output `i`.
    `logprobs` (when `params.logprobs` asked for them): one entry per output id, in order.
    """

    request_id: str
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    params: SamplingParams
    logits: torch.Tensor | None = None
    logprobs: tuple[TokenLogprobs, ...] | None = None


@dataclass(frozen=True)
class TokenEvent:
    """One sampled token of a request (what a stream emits), with its log probabilities when
    the request asked for them."""

    request_id: str
    token_id: int
    finished: bool
    finish_reason: FinishReason | None = None
    logprobs: TokenLogprobs | None = None


@dataclass
class _Seq:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    pages: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    computed: int = 0  # positions whose keys and values are in the cache
    logits: list[torch.Tensor] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    text: str = ""

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def decoding(self) -> bool:
        return self.computed >= len(self.prompt)


class Engine:
    """Generates for many requests at once; see the module docstring."""

    def __init__(
        self,
        forward: LlamaForward,
        tokenizer: ChatTokenizer | None = None,
        *,
        num_pages: int = 2048,
        page_size: int = 16,
        max_batch_tokens: int = 256,
        prefill_chunk: int = 32,
        max_running: int = 64,
        record_logits: bool = False,
        eos_ids: Sequence[int] | None = None,
    ) -> None:
        if max_batch_tokens < 1 or prefill_chunk < 1 or max_running < 1:
            raise InvalidInputError("batch limits must be positive")
        self.forward = forward
        self.config = forward.config
        self.tokenizer = tokenizer
        self.cache = PagedKVCache(self.config, num_pages, page_size, device=forward.weights.device)
        self.max_batch_tokens = max_batch_tokens
        self.prefill_chunk = prefill_chunk
        self.max_running = max_running
        self.record_logits = record_logits
        default_eos = () if tokenizer is None else (tokenizer.eos_id,)
        self.eos_ids = frozenset(default_eos if eos_ids is None else eos_ids)
        self._waiting: deque[_Seq] = deque()
        self._running: list[_Seq] = []
        self._finished: dict[str, Completion] = {}
        self._ids: set[str] = set()
        self.steps = 0

    # -- requests ------------------------------------------------------------------------

    def add(self, request_id: str, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        """Queue a request; it joins the running batch at the next step with room for it."""
        if request_id in self._ids:
            raise InvalidInputError(f"duplicate request id {request_id!r}")
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise InvalidInputError("the prompt must have at least one token")
        if any(not 0 <= t < self.config.vocab_size for t in prompt):
            raise InvalidInputError("prompt token id outside the vocabulary")
        total = len(prompt) + params.max_tokens
        if total > self.config.max_positions:
            raise InvalidInputError(f"prompt + max_tokens = {total} exceeds the context of {self.config.max_positions}")
        if self.cache.pages_for(total) > self.cache.num_pages:
            raise CacheFullError(f"a request of {total} positions can never fit in the cache")
        if params.stop and self.tokenizer is None:
            raise InvalidInputError("stop strings need a tokenizer")
        self._ids.add(request_id)
        self._waiting.append(_Seq(request_id, prompt, params))

    @property
    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def abort(self, request_id: str) -> bool:
        """Drop a waiting or running request and free its pages (a client that went away);
        False when it is not waiting or running."""
        for seq in list(self._waiting):
            if seq.request_id == request_id:
                self._waiting.remove(seq)
                return True
        for seq in self._running:
            if seq.request_id == request_id:
                self._running.remove(seq)
                self.cache.release(seq.pages)
                seq.pages = []
                return True
        return False

    def pop_finished(self) -> dict[str, Completion]:
        """Completions finished since the last call."""
        done, self._finished = self._finished, {}
        return done

    # -- stepping ------------------------------------------------------------------------

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.max_running:
            seq = self._waiting[0]
            need = self.cache.pages_for(len(seq.prompt) + seq.params.max_tokens)
            if need > self.cache.free_pages:
                break
            self._waiting.popleft()
            seq.pages = self.cache.allocate(need)
            self._running.append(seq)

    def _schedule(self) -> list[tuple[_Seq, SeqChunk]]:
        budget = self.max_batch_tokens
        plan: list[tuple[_Seq, SeqChunk]] = []
        for seq in self._running:
            if seq.decoding and budget > 0:
                plan.append((seq, SeqChunk([seq.output[-1]], seq.computed, seq.pages, "last")))
                budget -= 1
        for seq in self._running:
            if not seq.decoding and budget > 0:
                n = min(self.prefill_chunk, len(seq.prompt) - seq.computed, budget)
                ids = seq.prompt[seq.computed : seq.computed + n]
                last = seq.computed + n == len(seq.prompt)
                plan.append((seq, SeqChunk(ids, seq.computed, seq.pages, "last" if last else "none")))
                budget -= n
        return plan

    def step(self) -> list[TokenEvent]:
        """Run one forward over the current batch; return the tokens it sampled."""
        self._admit()
        plan = self._schedule()
        if not plan:
            return []
        logits = self.forward([chunk for _, chunk in plan], self.cache)
        self.steps += 1
        events: list[TokenEvent] = []
        row = 0
        for seq, chunk in plan:
            seq.computed = chunk.end
            if chunk.logits == "none":
                continue
            lg = logits[row]
            row += 1
            token = sample(lg, seq.params, chunk.end)
            seq.output.append(token)
            if self.record_logits:
                seq.logits.append(lg.clone())
            lp = None
            if seq.params.logprobs is not None:  # from this row alone: batch-invariant
                lp = token_logprobs(lg, token, seq.params.logprobs)
                seq.logprobs.append(lp)
            reason = self._finish_reason(seq, token)
            events.append(TokenEvent(seq.request_id, token, reason is not None, reason, lp))
            if reason is not None:
                self._finish(seq, reason)
        return events

    def _finish_reason(self, seq: _Seq, token: int) -> FinishReason | None:
        reason, text = finish_check(seq.output, seq.params, self.tokenizer, self.eos_ids)
        if text is not None:
            seq.text = text
        return reason

    def _finish(self, seq: _Seq, reason: FinishReason) -> None:
        self._running.remove(seq)
        self.cache.release(seq.pages)
        seq.pages = []
        if not seq.text and self.tokenizer is not None and not (reason == "stop" and seq.params.stop):
            seq.text = self.tokenizer.decode(seq.output)
        seq.finish_reason = reason
        self._finished[seq.request_id] = Completion(
            request_id=seq.request_id,
            prompt_ids=tuple(seq.prompt),
            output_ids=tuple(seq.output),
            text=seq.text,
            finish_reason=reason,
            params=seq.params,
            logits=torch.stack(seq.logits) if seq.logits else None,
            logprobs=tuple(seq.logprobs) if seq.params.logprobs is not None else None,
        )

    def run(self) -> dict[str, Completion]:
        """Step until every queued request has finished; return their completions."""
        done: dict[str, Completion] = {}
        while self.has_work:
            self.step()
            done.update(self.pop_finished())
        done.update(self.pop_finished())
        return done


def finish_check(
    output: Sequence[int], params: SamplingParams, tokenizer: ChatTokenizer | None, eos_ids: frozenset[int]
) -> tuple[FinishReason | None, str | None]:
    """Whether a request whose output so far is `output` has finished, and its text if a stop
    string ended it: an end-of-sequence last token (unless `ignore_eos`), then a stop string in
    the decoded text, then `max_tokens` reached."""
    if output and output[-1] in eos_ids and not params.ignore_eos:
        return "stop", None
    if params.stop and tokenizer is not None:
        text = tokenizer.decode(output)
        hits = [i for i in (text.find(s) for s in params.stop) if i >= 0]
        if hits:
            return "stop", text[: min(hits)]
    if len(output) >= params.max_tokens:
        return "length", None
    return None, None


def teacher_forced_logits(
    forward: LlamaForward, token_ids: Sequence[int], *, chunk: int = 64, page_size: int = 16
) -> torch.Tensor:
    """Logits `[len(token_ids), vocab]` of every position, from prefills of `chunk` tokens.

    Row `i` is the distribution of token `i + 1`. For a finished request, rows
    `len(prompt) - 1 ..` must equal the logits it was decoded with, bit for bit.
    """
    ids = list(token_ids)
    cache = PagedKVCache(forward.config, -(-len(ids) // page_size), page_size, device=forward.weights.device)
    table = cache.allocate(cache.num_pages)
    rows = []
    for start in range(0, len(ids), chunk):
        rows.append(forward([SeqChunk(ids[start : start + chunk], start, table, "all")], cache))
    return torch.cat(rows)
