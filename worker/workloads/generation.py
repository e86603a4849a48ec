"""SmolLM2 text generation as a `Workload`, with the verifier's teacher-forced re-execution.

Input blob (canonical: UTF-8 JSON, sorted keys, no spaces; :mod:`common.generation`)
    `{"max_tokens": n, "prompt_ids": [...], "seed": s, "stop": [...], "temperature": t,
    "top_k": k, "top_p": p}`: the prompt as token ids (the gateway applies the chat template
    and tokenizer) and every sampling parameter, the seed included (a provider picks one when
    the client gives none, and it is then part of the request it commits to).

Output blob (canonical JSON, same rules)
    `{"finish_reason": "stop"|"length", "output_ids": [...]}`; with the request's
    `prompt_ids` and parameters this is what the receipt commits to.

Units: prompt tokens + output tokens.

Verification (`verify`): one teacher-forced prefill of prompt + claimed output gives the
logits at every output position; re-sampling each position with the request's seed must give
exactly the claimed tokens, and the finish reason must follow from them. In the same numerics
class the logits are bitwise those of decoding, so an honest output always passes, and a
provider that ran another model (or a truncated one) fails at the first token it got wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from eth_hash.auto import keccak

from common import generation as codec
from worker.model.errors import InvalidInputError
from worker.model.llm import (
    ChatTokenizer,
    Engine,
    LlamaForward,
    SamplingParams,
    sample,
    teacher_forced_logits,
)
from worker.model.llm.engine import FinishReason, finish_check
from worker.workloads.base import WorkloadError

MAX_INPUT_BYTES = 1 << 20
_KEYS = {"max_tokens", "prompt_ids", "seed", "stop", "temperature", "top_k", "top_p"}
#: the runtime this PyTorch path is registered with (its keccak256 is the receipt's runtime hash)
RUNTIME = "hearth-smollm2/backend=torch/dtype=fp32/kernels=2"


def runtime_hash(runtime: str = RUNTIME) -> bytes:
    return bytes(keccak(runtime.encode("utf-8")))


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True)
class GenerationResult:
    output_ids: tuple[int, ...]
    finish_reason: FinishReason


class GenerationWorkload:
    """Requests are prompt ids + sampling parameters; outputs token ids + finish reason."""

    name = "generation"

    def __init__(
        self,
        forward: LlamaForward,
        tokenizer: ChatTokenizer | None,
        *,
        model_id: bytes,
        runtime: str = RUNTIME,
        max_running: int = 64,
    ) -> None:
        self.forward = forward
        self.tokenizer = tokenizer
        self._model_id = model_id
        self._runtime = runtime
        self.max_running = max_running

    def model_id(self) -> bytes:
        return self._model_id

    def runtime_descriptor(self) -> str:
        return self._runtime

    def runtime_hash(self) -> bytes:
        return runtime_hash(self._runtime)

    def decode_request(self, blob: bytes) -> GenerationRequest:
        if len(blob) > MAX_INPUT_BYTES:
            raise WorkloadError(f"input is {len(blob)} bytes, more than {MAX_INPUT_BYTES}")
        try:
            value = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WorkloadError(f"input is not UTF-8 JSON: {exc}") from None
        if not isinstance(value, dict) or set(value) != _KEYS:
            raise WorkloadError(f"input must be an object with exactly the keys {sorted(_KEYS)}")
        ids = value["prompt_ids"]
        vocab = self.forward.config.vocab_size
        if not isinstance(ids, list) or not ids or not all(type(t) is int and 0 <= t < vocab for t in ids):
            raise WorkloadError("prompt_ids must be a non-empty list of token ids")
        stop = value["stop"]
        if not isinstance(stop, list):
            raise WorkloadError("stop must be a list of strings")
        try:
            params = SamplingParams(
                max_tokens=value["max_tokens"],
                temperature=float(value["temperature"]),
                top_p=float(value["top_p"]),
                top_k=value["top_k"],
                seed=value["seed"],
                stop=tuple(stop),
            )
        except (InvalidInputError, TypeError, ValueError) as exc:
            raise WorkloadError(str(exc)) from None
        return GenerationRequest(tuple(ids), params)

    def encode_request(self, req: GenerationRequest) -> bytes:
        p = req.params
        return codec.encode_request(req.prompt_ids, max_tokens=p.max_tokens, temperature=p.temperature,
                                    top_p=p.top_p, top_k=p.top_k, seed=p.seed, stop=p.stop)

    def _engine(self, reqs: Sequence[GenerationRequest], page_size: int = 16) -> Engine:
        # KV pages for every request at its longest (a page to spare each), at most 4096
        need = sum(-(-(len(r.prompt_ids) + r.params.max_tokens) // page_size) + 1 for r in reqs)
        return Engine(self.forward, self.tokenizer, max_running=self.max_running, num_pages=max(1, min(4096, need)),
                      page_size=page_size)

    def execute(self, reqs: Sequence[GenerationRequest]) -> list[GenerationResult]:
        engine = self._engine(reqs)
        for i, r in enumerate(reqs):
            engine.add(str(i), r.prompt_ids, r.params)
        done = engine.run()
        return [GenerationResult(done[str(i)].output_ids, done[str(i)].finish_reason) for i in range(len(reqs))]

    def encode_output(self, req: GenerationRequest, out: GenerationResult) -> bytes:
        return codec.encode_output(out.output_ids, out.finish_reason)

    def decode_output(self, blob: bytes) -> GenerationResult:
        try:
            value = json.loads(blob.decode("utf-8"))
            ids = tuple(int(t) for t in value["output_ids"])
            reason = value["finish_reason"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise WorkloadError(f"malformed output: {exc}") from None
        if reason not in ("stop", "length") or not ids:
            raise WorkloadError("malformed output")
        return GenerationResult(ids, reason)

    def units(self, req: GenerationRequest, out: GenerationResult) -> int:
        return len(req.prompt_ids) + len(out.output_ids)

    def compare(self, a: bytes, b: bytes) -> bool:
        return a == b

    def verify(self, req: GenerationRequest, output_blob: bytes) -> bool:
        """Re-execute `req` as one teacher-forced prefill and check the claimed output blob."""
        try:
            out = self.decode_output(output_blob)
        except WorkloadError:
            return False
        if self.encode_output(req, out) != output_blob or len(out.output_ids) > req.params.max_tokens:
            return False
        ids = list(req.prompt_ids) + list(out.output_ids)
        if any(not 0 <= t < self.forward.config.vocab_size for t in ids):
            return False
        logits = teacher_forced_logits(self.forward, ids)
        n = len(req.prompt_ids)
        for i, token in enumerate(out.output_ids):
            if sample(logits[n - 1 + i], req.params, n + i) != token:
                return False
        # The finish reason must be the one the engine would give, and only at the last token.
        eos = frozenset(() if self.tokenizer is None else (self.tokenizer.eos_id,))
        ids_out = list(out.output_ids)
        replay = [finish_check(ids_out[: i + 1], req.params, self.tokenizer, eos)[0] for i in range(len(ids_out))]
        return all(r is None for r in replay[:-1]) and replay[-1] == out.finish_reason
