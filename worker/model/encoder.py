"""`Encoder`: texts -> L2-normalised float32 embeddings, plus the hashes a receipt names.

Receipt fields computed here:

* output hash: `keccak256(output_bytes(embedding))`, where `output_bytes` is the embedding as
  little-endian IEEE float32 in C order (384 values, 1536 bytes, for one input);
* runtime hash: `keccak256(utf8("hearth-minilm-l6-v2/backend=<b>/dtype=<d>/kernels=<v>"))`
  with `v = KERNEL_VERSION`;
* units: the number of non-padding tokens of each input after truncation to 256, [CLS] and
  [SEP] included (`Encoder.count_tokens`);
* model hash: `weights.model_content_hash()`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
from eth_hash.auto import keccak

from worker.model.errors import InvalidInputError, UnsupportedConfigError
from worker.model.packing import PackedBatch, pack
from worker.model.torch_path import TorchForward
from worker.model.weights import (
    HIDDEN,
    MAX_SEQ_LENGTH,
    MiniLMTokenizer,
    load_weights,
    model_content_hash,
    torch_dtype,
)

logger = logging.getLogger(__name__)

KERNEL_VERSION = "1"
"""Version of the numerics of both backends. Bump it whenever any output byte can change
(kernel code, tile sizes, `torch_path.ROW_BLOCK`, reduction order, tokenizer settings)."""

MODEL_NAME = "hearth-minilm-l6-v2"
EMBEDDING_DIM = HIDDEN

Backend = Literal["torch", "triton"]
DType = Literal["fp32", "fp16", "bf16"]
Embeddings = npt.NDArray[np.float32]


def output_bytes(embedding: npt.NDArray[np.float32]) -> bytes:
    """Canonical bytes of an embedding (or a stack of them): little-endian float32, C order."""
    arr = np.asarray(embedding)
    if arr.dtype != np.float32:
        raise InvalidInputError(f"embedding must be float32, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype="<f4").tobytes()


def output_hash(embedding: npt.NDArray[np.float32]) -> bytes:
    """keccak256 of `output_bytes(embedding)` (32 bytes)."""
    return bytes(keccak(output_bytes(embedding)))


def runtime_descriptor(backend: Backend, dtype: DType) -> str:
    """Human-readable name of a runtime, the preimage of its runtime hash."""
    return f"{MODEL_NAME}/backend={backend}/dtype={dtype}/kernels={KERNEL_VERSION}"


def runtime_hash(backend: Backend, dtype: DType) -> bytes:
    """keccak256 of `runtime_descriptor(backend, dtype)` (32 bytes)."""
    return bytes(keccak(runtime_descriptor(backend, dtype).encode("utf-8")))


@functools.cache
def model_hash() -> bytes:
    """Content hash of the installed model files (cached; see `model_content_hash`)."""
    return model_content_hash()


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """all-MiniLM-L6-v2 sentence encoder on one device.

    `backend="torch"` runs the batch-invariant PyTorch path (CPU or GPU); `backend="triton"`
    runs every op as a Triton kernel (CUDA, or CPU under `TRITON_INTERPRET=1`, where bf16 is
    unavailable). Outputs of one sentence are byte-identical whatever else is in its batch.
    """

    def __init__(
        self,
        backend: Backend = "torch",
        dtype: DType = "fp32",
        device: str | torch.device | None = None,
    ) -> None:
        if backend not in get_args(Backend):
            raise UnsupportedConfigError(f"unknown backend {backend!r}")
        if dtype not in get_args(DType):
            raise UnsupportedConfigError(f"unknown dtype {dtype!r}")
        dev = torch.device(device if device is not None else _default_device())
        self.backend: Backend = backend
        self.dtype: DType = dtype
        self.device = dev
        self._forward = self._build(backend, dtype, dev)
        self.tokenizer = MiniLMTokenizer(max_length=MAX_SEQ_LENGTH)
        logger.info(
            "encoder ready",
            extra={"backend": backend, "dtype": dtype, "device": str(dev)},
        )

    @staticmethod
    def _build(backend: Backend, dtype: DType, dev: torch.device) -> Callable[[PackedBatch], torch.Tensor]:
        if dtype == "bf16" and dev.type != "cuda":
            raise UnsupportedConfigError("bf16 is supported on CUDA devices only")
        if backend == "triton":
            from worker.kernels import TritonForward, interpreting

            if dev.type != "cuda" and not (dev.type == "cpu" and interpreting()):
                raise UnsupportedConfigError("the triton backend needs a CUDA device (or TRITON_INTERPRET=1 on CPU)")
            return TritonForward(load_weights(torch_dtype(dtype), dev))
        return TorchForward(load_weights(torch_dtype(dtype), dev))

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to 256 tokens, unpadded."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("texts must be a list of strings")
        return self.tokenizer.encode_ids(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Billing units per text: its non-padding tokens, [CLS] and [SEP] included."""
        return [len(ids) for ids in self.tokenize(texts)]

    def encode_ids(self, ids: Sequence[Sequence[int]]) -> Embeddings:
        """Embeddings of pre-tokenized inputs: `[n, 384]` float32, L2-normalised."""
        if not ids:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        out = self._forward(pack(ids))
        result: Embeddings = out.float().cpu().numpy()
        return result

    def encode(self, texts: Sequence[str]) -> Embeddings:
        """Embeddings of `texts`: `[n, 384]` float32, L2-normalised."""
        return self.encode_ids(self.tokenize(texts))

    def runtime_hash(self) -> bytes:
        """Runtime hash of this encoder's backend, dtype and `KERNEL_VERSION`."""
        return runtime_hash(self.backend, self.dtype)

    def runtime_descriptor(self) -> str:
        """Preimage of `runtime_hash()`."""
        return runtime_descriptor(self.backend, self.dtype)

    @staticmethod
    def model_hash() -> bytes:
        """Content hash of the model files."""
        return model_hash()
