"""Each Triton kernel, run by Triton's CPU interpreter, against the PyTorch path."""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worker.model.packing import pack
from worker.model.torch_path import TorchForward, attention_one
from worker.model.weights import LAYER_NORM_EPS, MiniLMTokenizer, MiniLMWeights

triton = pytest.importorskip("triton")

import triton.language as tl  # noqa: E402

from worker.kernels import (  # noqa: E402
    TritonForward,
    add_layernorm,
    attention_varlen,
    embedding_layernorm,
    gemm_bias,
    interpreting,
    mean_pool_l2,
)
from worker.kernels.common import erf_f32  # noqa: E402

pytestmark = pytest.mark.skipif(not interpreting(), reason="needs TRITON_INTERPRET=1")


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


@triton.jit
def _erf_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, erf_f32(x), mask=mask)


def test_erf_approximation_is_within_1e7_of_true_erf_everywhere() -> None:
    x = torch.linspace(-6.0, 6.0, 200_001, dtype=torch.float32)
    y = torch.empty_like(x)
    _erf_kernel[(triton.cdiv(x.numel(), 4096),)](x, y, x.numel(), BLOCK=4096)
    exact = np.array([math.erf(v) for v in x.double().tolist()])
    assert np.abs(y.double().numpy() - exact).max() < 1e-7


@pytest.mark.parametrize(("n", "k", "gelu"), [(1152, 384, False), (1536, 384, True), (384, 1536, False)])
def test_gemm_kernel_matches_torch_in_fp32(n: int, k: int, gelu: bool) -> None:
    a = torch.randn(37, k)
    w = torch.randn(n, k) / math.sqrt(k)
    b = torch.randn(n)
    ref = torch.addmm(b, a, w.t())
    if gelu:
        ref = F.gelu(ref)
    assert rel_err(gemm_bias(a, w, b, gelu=gelu), ref) < 1e-5


def test_gemm_kernel_matches_torch_in_fp16() -> None:
    a = torch.randn(20, 384).half()
    w = (torch.randn(1536, 384) / 20).half()
    b = torch.randn(1536)
    ref = F.gelu(torch.addmm(b, a.float(), w.float().t()))
    assert rel_err(gemm_bias(a, w, b, gelu=True), ref) < 2e-3


def test_gemm_rows_do_not_depend_on_the_other_rows_or_their_count() -> None:
    w = torch.randn(384, 384) / 20
    b = torch.randn(384)
    rows = torch.randn(70, 384)
    full = gemm_bias(rows, w, b)
    for i in (0, 5, 63, 64, 69):
        alone = gemm_bias(rows[i : i + 1].clone(), w, b)
        assert torch.equal(alone[0], full[i])
    shuffled = torch.randperm(70)
    assert torch.equal(gemm_bias(rows[shuffled].contiguous(), w, b), full[shuffled])


def test_embedding_layernorm_kernel_matches_torch_in_fp32(weights_fp32: MiniLMWeights) -> None:
    w = weights_fp32
    ids = torch.tensor([101, 7592, 2088, 999, 102, 101, 102])
    pos = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    got = embedding_layernorm(ids, pos, w.word_emb, w.pos_emb, w.type_emb[0], w.emb_ln_w, w.emb_ln_b, LAYER_NORM_EPS)
    e = (w.word_emb[ids] + w.type_emb[0]) + w.pos_emb[pos]
    ref = F.layer_norm(e, (384,), w.emb_ln_w, w.emb_ln_b, LAYER_NORM_EPS)
    assert rel_err(got, ref) < 1e-5


def test_residual_add_layernorm_kernel_matches_torch_in_fp32() -> None:
    x, r = torch.randn(9, 384), torch.randn(9, 384)
    lw, lb = torch.randn(384), torch.randn(384)
    ref = F.layer_norm(x + r, (384,), lw, lb, LAYER_NORM_EPS)
    assert rel_err(add_layernorm(x, r, lw, lb, LAYER_NORM_EPS), ref) < 1e-5


def test_residual_add_layernorm_kernel_matches_torch_in_fp16() -> None:
    x, r = torch.randn(9, 384).half(), torch.randn(9, 384).half()
    lw, lb = torch.randn(384), torch.randn(384)
    ref = F.layer_norm(x.float() + r.float(), (384,), lw, lb, LAYER_NORM_EPS)
    assert rel_err(add_layernorm(x, r, lw, lb, LAYER_NORM_EPS), ref) < 2e-3


def _reference_attention(qkv: torch.Tensor, cu: list[int]) -> torch.Tensor:
    return torch.cat([attention_one(qkv[cu[i] : cu[i + 1]]) for i in range(len(cu) - 1)])


def test_attention_kernel_matches_torch_in_fp32() -> None:
    cu = [0, 1, 8, 78, 83]  # lengths 1, 7, 70 (two key blocks), 5
    qkv = torch.randn(cu[-1], 3 * 384)
    got = attention_varlen(qkv, torch.tensor(cu, dtype=torch.int32), 70, 12)
    assert rel_err(got, _reference_attention(qkv, cu)) < 1e-5


def test_attention_kernel_matches_torch_in_fp16() -> None:
    cu = [0, 3, 20]
    qkv = torch.randn(cu[-1], 3 * 384).half()
    got = attention_varlen(qkv, torch.tensor(cu, dtype=torch.int32), 17, 12)
    assert rel_err(got, _reference_attention(qkv.float(), cu)) < 5e-3


def test_attention_of_a_sequence_does_not_depend_on_its_neighbours() -> None:
    seq = torch.randn(66, 3 * 384)
    alone = attention_varlen(seq, torch.tensor([0, 66], dtype=torch.int32), 66, 12)
    other = torch.randn(13, 3 * 384)
    packed = torch.cat([other, seq, other[:4]])
    cu = torch.tensor([0, 13, 79, 83], dtype=torch.int32)
    together = attention_varlen(packed, cu, 66, 12)
    assert torch.equal(together[13:79], alone)


def test_mean_pooling_l2_kernel_matches_torch_in_fp32() -> None:
    cu = [0, 1, 18, 58]
    h = torch.randn(cu[-1], 384)
    ref = torch.stack([F.normalize(h[cu[i] : cu[i + 1]].mean(dim=0), dim=0) for i in range(len(cu) - 1)])
    got = mean_pool_l2(h, torch.tensor(cu, dtype=torch.int32))
    assert got.dtype == torch.float32
    assert rel_err(got, ref) < 1e-5


def test_interpreted_kernel_model_matches_torch_path_in_fp32(
    weights_fp32: MiniLMWeights, tokenizer: MiniLMTokenizer, torch_forward: TorchForward
) -> None:
    texts = ["Hello world!", "Batch invariance is a property of kernels.", "日本語 🙂"]
    batch = pack(tokenizer.encode_ids(texts))
    got = TritonForward(weights_fp32)(batch)
    ref = torch_forward(batch)
    cos = (got * ref).sum(dim=1)
    assert float(cos.min()) > 0.99999
    # A sentence alone gives the same bytes as inside the batch (at a non-zero offset).
    alone = TritonForward(weights_fp32)(pack(tokenizer.encode_ids(texts[1:2])))
    assert alone[0].numpy().tobytes() == got[1].numpy().tobytes()
