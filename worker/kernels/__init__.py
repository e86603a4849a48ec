"""Triton kernels of the MiniLM encoder: fixed tiles, no split-K, no atomics, batch-invariant.

Importing this package imports Triton; `worker.model` imports it only for the `triton`
backend. Under `TRITON_INTERPRET=1` the kernels run on CPU tensors (fp32 and fp16 only).
"""

from worker.kernels.attention import attention_varlen
from worker.kernels.common import interpreting
from worker.kernels.forward import TritonForward
from worker.kernels.gemm import GemmConfig, gemm_bias, gemm_bias_autotuned, gemm_config
from worker.kernels.layernorm import add_layernorm, embedding_layernorm
from worker.kernels.pooling import mean_pool_l2

__all__ = [
    "GemmConfig",
    "TritonForward",
    "add_layernorm",
    "attention_varlen",
    "embedding_layernorm",
    "gemm_bias",
    "gemm_bias_autotuned",
    "gemm_config",
    "interpreting",
    "mean_pool_l2",
]
