"""LLM generation runtime of the worker: SmolLM2-135M-Instruct, batch-invariant.

Public API:

* `load_weights()`, `model_hash()` (keccak of the GGUF bytes: the model id), `LlamaConfig`;
* `ChatTokenizer.from_gguf()`: tokenizer and chat template from the GGUF metadata;
* `LlamaForward(weights)`: the batch-invariant PyTorch forward over a `PagedKVCache`;
* `Engine(forward, tokenizer)`: continuous batching (`add`, `step`, `run`), `SamplingParams`,
  `Completion`, `teacher_forced_logits` (what a verifier re-executes).

Importing `worker.model` first puts MKL in strict CNR mode before any GEMM.
"""

import worker.model  # noqa: F401 - sets MKL strict CNR mode before any GEMM
from worker.model.llm.engine import Completion, Engine, TokenEvent, teacher_forced_logits
from worker.model.llm.kv_cache import CacheFullError, PagedKVCache
from worker.model.llm.sampling import (
    MAX_TOP_LOGPROBS,
    SamplingParams,
    TokenLogprobs,
    gumbel_noise,
    sample,
    token_logprobs,
    uniform_noise,
)
from worker.model.llm.tokenizer import ChatTokenizer, TokenizerSpec
from worker.model.llm.torch_path import (
    ATTN_BLOCK,
    LOGIT_BLOCK,
    MIN_ROWS,
    ROW_BLOCK,
    SPLIT,
    LlamaForward,
    SeqChunk,
)
from worker.model.llm.weights import (
    LlamaConfig,
    LlamaWeights,
    dequantize,
    gguf_content_hash,
    gguf_path,
    load_weights,
    model_hash,
    random_weights,
)

__all__ = [
    "ATTN_BLOCK",
    "LOGIT_BLOCK",
    "MAX_TOP_LOGPROBS",
    "MIN_ROWS",
    "ROW_BLOCK",
    "SPLIT",
    "CacheFullError",
    "ChatTokenizer",
    "Completion",
    "Engine",
    "LlamaConfig",
    "LlamaForward",
    "LlamaWeights",
    "PagedKVCache",
    "SamplingParams",
    "SeqChunk",
    "TokenEvent",
    "TokenLogprobs",
    "TokenizerSpec",
    "dequantize",
    "gguf_content_hash",
    "gguf_path",
    "gumbel_noise",
    "load_weights",
    "model_hash",
    "random_weights",
    "sample",
    "teacher_forced_logits",
    "token_logprobs",
    "uniform_noise",
]
