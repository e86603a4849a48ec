"""Sentence-embedding runtime of the worker: all-MiniLM-L6-v2, batch-invariant.

Public API:

* `Encoder(backend="torch"|"triton", dtype="fp32"|"fp16"|"bf16", device=None)` with
  `encode(texts) -> np.ndarray [n, 384] float32`, `count_tokens(texts) -> list[int]` (units),
  `runtime_hash() -> bytes`;
* `output_bytes(embedding) -> bytes`, `output_hash(embedding) -> bytes`,
  `runtime_hash(backend, dtype) -> bytes`, `KERNEL_VERSION`;
* `model_content_hash() -> bytes` (the model id), `model_hash()` (cached);
* `plan_batches`, `DynamicBatcher`, `embedding_batcher`, `QueuedItem`.
"""

from worker.model._mkl import request_strict_cnr

request_strict_cnr()

from worker.model.batching import (  # noqa: E402 - MKL mode must be set before any GEMM
    BatcherStoppedError,
    DynamicBatcher,
    QueuedItem,
    embedding_batcher,
    padded_tokens,
    plan_batches,
)
from worker.model.encoder import (  # noqa: E402
    EMBEDDING_DIM,
    KERNEL_VERSION,
    Encoder,
    model_hash,
    output_bytes,
    output_hash,
    runtime_descriptor,
    runtime_hash,
)
from worker.model.errors import (  # noqa: E402
    InvalidInputError,
    ModelError,
    ModelFilesNotFoundError,
    UnsupportedConfigError,
)
from worker.model.weights import (  # noqa: E402
    MAX_SEQ_LENGTH,
    MiniLMTokenizer,
    content_hash_of,
    load_weights,
    model_content_hash,
    model_dir,
)

__all__ = [
    "EMBEDDING_DIM",
    "KERNEL_VERSION",
    "MAX_SEQ_LENGTH",
    "BatcherStoppedError",
    "DynamicBatcher",
    "Encoder",
    "InvalidInputError",
    "MiniLMTokenizer",
    "ModelError",
    "ModelFilesNotFoundError",
    "QueuedItem",
    "UnsupportedConfigError",
    "content_hash_of",
    "embedding_batcher",
    "load_weights",
    "model_content_hash",
    "model_dir",
    "model_hash",
    "output_bytes",
    "output_hash",
    "padded_tokens",
    "plan_batches",
    "runtime_descriptor",
    "runtime_hash",
]
