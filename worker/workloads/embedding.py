"""all-MiniLM-L6-v2 sentence embeddings as a `Workload` (job formats of `contracts.jobio`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from contracts import jobio
from contracts.errors import InvalidJobInputError
from worker.workloads.base import WorkloadError

if TYPE_CHECKING:
    from worker.model import Encoder

Embeddings = npt.NDArray[np.float32]


class EmbeddingWorkload:
    """Requests are lists of texts; outputs `[n, 384]` float32; units are tokens."""

    name = "embedding"

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def model_id(self) -> bytes:
        return self.encoder.model_hash()

    def runtime_descriptor(self) -> str:
        return self.encoder.runtime_descriptor()

    def decode_request(self, blob: bytes) -> tuple[str, ...]:
        try:
            return tuple(jobio.decode_input(blob))
        except InvalidJobInputError as exc:
            raise WorkloadError(str(exc)) from None

    def encode_request(self, req: tuple[str, ...]) -> bytes:
        return jobio.encode_input(list(req))

    def execute(self, reqs: Sequence[tuple[str, ...]]) -> list[Embeddings]:
        flat = [t for r in reqs for t in r]
        out = self.encoder.encode(flat)
        res: list[Embeddings] = []
        i = 0
        for r in reqs:
            res.append(out[i : i + len(r)])
            i += len(r)
        return res

    def encode_output(self, req: tuple[str, ...], out: Embeddings) -> bytes:
        return jobio.encode_output(out)

    def units(self, req: tuple[str, ...], out: Embeddings) -> int:
        return sum(self.encoder.count_tokens(list(req)))

    def compare(self, a: bytes, b: bytes) -> bool:
        return a == b
