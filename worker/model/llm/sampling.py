"""Seeded, batch-independent sampling: temperature, top-k, top-p, by Gumbel-max.

The next token of a request is a pure function of its logits row, its sampling parameters and
the position being sampled:

* `temperature == 0`: the arg max of the logits (lowest id among ties);
* otherwise `z = logits / temperature` (fp32). Top-k keeps the `k` largest `z` (ties by lower
  id: a stable descending sort); top-p then keeps the shortest prefix of that order whose
  softmax mass (float64, over the kept tokens) reaches `top_p`. The token is the arg max over
  kept tokens of `z + g`, where `g = -log(-log(u))` is Gumbel noise and `u` in (0, 1) comes from
  a counter-based hash of `(seed, position, token id)` (`uniform_noise`). Gumbel-max draws
  exactly from softmax(z) restricted to the kept set.

Nothing reads a global random state or depends on other requests of the batch, so a
verifier with the logits, the seed and the positions re-derives every sampled token.

Log probabilities (`token_logprobs`, when a request asks for them with `logprobs = k`) are vLLM's
default "raw" ones: `log_softmax` of the fp32 logits row a token was sampled from, before
temperature, top-k and top-p, computed on that one row alone (never on the batch's matrix), so
they depend on nothing but the row, which is batch-invariant and recomputed bit for bit by a
teacher-forced prefill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from worker.model.errors import InvalidInputError

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
MAX_SEED = 2**63 - 1
#: the most alternatives a request may ask log probabilities for (OpenAI's `top_logprobs` cap)
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation parameters (OpenAI's names; `top_k = 0` means no top-k)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    #: None: no log probabilities; `k`: the sampled token's and the `k` most likely ones'
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidInputError("max_tokens must be a positive integer")
        if not 0.0 <= self.temperature <= 100.0:
            raise InvalidInputError("temperature must be in [0, 100]")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInputError("top_p must be in (0, 1]")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidInputError("top_k must be a non-negative integer")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InvalidInputError(f"seed must be an integer in [0, {MAX_SEED}]")
        if any(not isinstance(s, str) or not s for s in self.stop) or len(self.stop) > 4:
            raise InvalidInputError("stop must be at most 4 non-empty strings")
        if self.logprobs is not None and (not isinstance(self.logprobs, int)
                                          or not 0 <= self.logprobs <= MAX_TOP_LOGPROBS):
            raise InvalidInputError(f"logprobs must be None or an integer in [0, {MAX_TOP_LOGPROBS}]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def uniform_noise(seed: int, position: int, token_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """`u` in (0, 1) for each token id.

    `h = splitmix64(splitmix64(splitmix64(seed) ^ position) ^ id)` (uint64, wrapping), then
    `u = ((h >> 11) + 0.5) / 2^53`.
    """
    s = _splitmix64(np.array([seed], dtype=np.uint64))
    s = _splitmix64(s ^ np.uint64(position))
    h = _splitmix64(s ^ token_ids.astype(np.uint64))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)


def gumbel_noise(seed: int, position: int, token_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Standard Gumbel noise `-log(-log(u))` for each token id (float64)."""
    u = uniform_noise(seed, position, token_ids)
    return np.asarray(-np.log(-np.log(u)), dtype=np.float64)


def kept_tokens(logits: torch.Tensor, params: SamplingParams) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Token ids that top-k/top-p keep (best first) and their scaled logits `z`."""
    z = (logits.float() / params.temperature).cpu().numpy()
    order = np.argsort(-z, kind="stable").astype(np.int64)
    if params.top_k:
        order = order[: params.top_k]
    if params.top_p < 1.0:
        zs = z[order].astype(np.float64)
        p = np.exp(zs - zs[0])
        p /= p.sum()
        cut = int(np.searchsorted(np.cumsum(p), params.top_p)) + 1
        order = order[: max(1, min(cut, order.size))]
    return order, z[order]


def sample(logits: torch.Tensor, params: SamplingParams, position: int) -> int:
    """The token sampled from a `[vocab]` fp32 logits row at sequence position `position`."""
    if logits.dim() != 1:
        raise InvalidInputError("sample takes one logits row")
    if params.greedy:
        return int(np.argmax(logits.float().cpu().numpy()))
    ids, z = kept_tokens(logits, params)
    scores = z.astype(np.float64) + gumbel_noise(params.seed, position, ids)
    return int(ids[int(np.argmax(scores))])


def sample_rows(logits: torch.Tensor, params: Sequence[SamplingParams], positions: Sequence[int]) -> list[int]:
    """`sample` for each row."""
    return [sample(logits[i], p, pos) for i, (p, pos) in enumerate(zip(params, positions, strict=True))]


class TokenLogprobs(NamedTuple):
    """A sampled token's log probability and the `k` most likely tokens' (`top`: (id, logprob),
    most likely first, ties by lower id), from one logits row. A `common.generation.RawLogprobs`
    as it is, which the OpenAI shapes are built from."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprobs(logits: torch.Tensor, token_id: int, k: int) -> TokenLogprobs:
    """Raw log probabilities of a `[vocab]` logits row: `log_softmax` of the fp32 row (before
    temperature, top-k, top-p), the value at `token_id` and the `k` largest."""
    if logits.dim() != 1:
        raise InvalidInputError("token_logprobs takes one logits row")
    lp = torch.log_softmax(logits.float(), dim=0).cpu()
    top: tuple[tuple[int, float], ...] = ()
    if k:
        values, ids = torch.sort(lp, descending=True, stable=True)
        top = tuple((int(i), float(v)) for i, v in zip(ids[:k].tolist(), values[:k].tolist(), strict=True))
    return TokenLogprobs(int(token_id), float(lp[int(token_id)]), top)
