"""The Llama Triton kernels under Triton's CPU interpreter, against the PyTorch path.

`TRITON_INTERPRET=1` is set by a fixture for this module only. Triton reads it when a function
is decorated, so inside the fixture the kernel modules are re-imported, and the `@triton.jit`
functions of `triton.language` (`tl.zeros`, `tl.sum`, ...) are swapped for interpreted ones
when Triton was imported without it; everything is restored afterwards.
Small random-weight configs in fp32: each kernel against its torch counterpart, the whole
forward against `LlamaForward`, and bitwise batch invariance of the engine on the kernels.
"""

# mypy: disable-error-code="no-untyped-def"

from __future__ import annotations

import importlib
import random
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from worker.model.llm import (
    Completion,
    Engine,
    LlamaConfig,
    LlamaForward,
    PagedKVCache,
    SamplingParams,
    random_weights,
    teacher_forced_logits,
)
from worker.model.llm.torch_path import attention_one, rms_norm, rope, rope_tables

from .conftest import TINY

pytest.importorskip("triton")

BATCH_SIZES = [1, 2, 3, 8, 17, 33]


@pytest.fixture(scope="module")
def kernels() -> Iterator[tuple[ModuleType, ModuleType]]:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        for mod in (tl, tl.math, tl.standard):
            for name, value in list(vars(mod).items()):
                if isinstance(value, JITFunction):
                    mp.setattr(mod, name, InterpretedFunction(value.fn))
        import worker.kernels.llama as ops
        import worker.kernels.llama_forward as fwd

        yield importlib.reload(ops), importlib.reload(fwd)
    importlib.reload(ops)
    importlib.reload(fwd)


@pytest.fixture(scope="module")
def triton_forward(kernels: tuple[ModuleType, ModuleType], tiny_forward: LlamaForward) -> Any:
    return kernels[1].TritonLlamaForward(tiny_forward.weights)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


def test_matmul_kernel_matches_torch_and_rows_do_not_depend_on_the_row_count(kernels) -> None:
    ops = kernels[0]
    w = torch.randn(96, 80)
    a = torch.randn(40, 80)
    full = ops.matmul(a, w)
    torch.testing.assert_close(full, a @ w.t(), rtol=1e-5, atol=1e-5)
    for i in (0, 31, 32, 39):
        assert torch.equal(ops.matmul(a[i : i + 1].contiguous(), w)[0], full[i])


def test_rms_norm_kernel_matches_torch(kernels) -> None:
    x, w = torch.randn(5, 576), torch.randn(576)
    torch.testing.assert_close(kernels[0].rms_norm(x, w, 1e-5), rms_norm(x, w, 1e-5), rtol=1e-5, atol=1e-5)


def test_rope_kernel_rotates_adjacent_pairs_like_torch(kernels) -> None:
    cfg = LlamaConfig(num_layers=1, hidden=64, ffn=64, num_heads=4, num_kv_heads=2, head_dim=16, vocab_size=8)
    cos, sin = rope_tables(cfg)
    x = torch.randn(6, 4 * 16)
    pos = torch.tensor([0, 1, 5, 100, 511, 2], dtype=torch.int32)
    ref = rope(x.view(6, 4, 16), cos[pos.long()][:, None], sin[pos.long()][:, None]).reshape(6, 64)
    kernels[0].rope_(x, 4, pos, cos, sin)
    torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-6)


def test_swiglu_kernel_matches_torch(kernels) -> None:
    gu = torch.randn(3, 2 * 96) * 4
    torch.testing.assert_close(kernels[0].swiglu(gu), F.silu(gu[:, :96]) * gu[:, 96:], rtol=1e-5, atol=1e-6)


def test_paged_attention_kernel_matches_torch_across_splits_and_scattered_pages(kernels) -> None:
    ops = kernels[0]
    cache = PagedKVCache(TINY, num_pages=40, page_size=16)
    c = TINY
    # Two sequences on interleaved pages; one crosses two key splits (150 positions).
    tables = [[7, 1, 30, 2, 9, 12, 3, 4, 5, 6], [0, 11]]
    lengths = [150, 20]
    for table, n in zip(tables, lengths, strict=True):
        k = torch.randn(n, c.num_kv_heads, c.head_dim)
        v = torch.randn(n, c.num_kv_heads, c.head_dim)
        cache.write(0, torch.tensor(cache.slots(table, 0, n)), k, v)
    toks = [(0, 0), (0, 63), (0, 64), (0, 149), (1, 19), (1, 3)]
    q = torch.randn(len(toks), c.q_size)
    tab = torch.zeros((2, 10), dtype=torch.int32)
    for i, t in enumerate(tables):
        tab[i, : len(t)] = torch.tensor(t)
    got = ops.paged_attention(
        q, cache.k[0], cache.v[0], tab,
        torch.tensor([s for s, _ in toks], dtype=torch.int32), torch.tensor([p for _, p in toks], dtype=torch.int32),
        num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
    )  # fmt: skip
    for i, (s, p) in enumerate(toks):
        keys, values = cache.gather(0, tables[s], p + 1)
        torch.testing.assert_close(got[i], attention_one(q[i], keys, values, c), rtol=1e-5, atol=1e-5)


def test_triton_forward_matches_the_torch_path_and_is_identical_for_any_chunking(
    triton_forward: Any, tiny_forward: LlamaForward
) -> None:
    ids = [random.Random(2).randrange(TINY.vocab_size) for _ in range(24)]
    got = teacher_forced_logits(triton_forward, ids, chunk=32)
    torch.testing.assert_close(got, teacher_forced_logits(tiny_forward, ids, chunk=32), rtol=1e-4, atol=1e-4)
    assert torch.equal(teacher_forced_logits(triton_forward, ids[:8], chunk=1), got[:8])
    assert torch.equal(teacher_forced_logits(triton_forward, ids, chunk=7), got)


def _run(
    forward: Any, reqs: list[tuple[list[int], SamplingParams]], order: list[int], **kw: Any
) -> dict[int, Completion]:
    engine = Engine(forward, record_logits=True, num_pages=256, **kw)
    for i in order:
        engine.add(str(i), *reqs[i])
    return {int(k): v for k, v in engine.run().items()}


def test_triton_engine_outputs_are_bitwise_identical_alone_in_batches_and_teacher_forced(kernels) -> None:
    # One layer: the interpreter's cost is per program, and invariance is per layer.
    cfg = LlamaConfig(num_layers=1, hidden=32, ffn=64, num_heads=2, num_kv_heads=1, head_dim=16, vocab_size=64)
    forward = kernels[1].TritonLlamaForward(random_weights(cfg, seed=5))
    rng = random.Random(4)
    reqs = [
        (
            [rng.randrange(cfg.vocab_size) for _ in range(rng.randint(1, 5))],
            SamplingParams(max_tokens=rng.randint(1, 3), temperature=rng.choice([0.0, 1.0]), seed=i, ignore_eos=True),
        )
        for i in range(33)
    ]
    # All 33 together is the reference; a few alone must match it, then every smaller batch.
    ref = _run(forward, reqs, list(range(33))[::-1], max_running=33)
    for i in (0, 7, 20, 32):
        assert _same(_run(forward, reqs, [i])[i], ref[i]), f"request {i} alone"
    order = list(range(33))
    for size in BATCH_SIZES[:-1]:
        rng.shuffle(order)
        idx = order[:size]
        together = _run(forward, reqs, idx, max_running=size, prefill_chunk=rng.choice([1, 7, 32]))
        for i in idx:
            assert _same(together[i], ref[i]), f"request {i} in a batch of {size}"
    c = ref[5]
    assert c.logits is not None
    full = teacher_forced_logits(forward, list(c.prompt_ids) + list(c.output_ids), chunk=2)
    n = len(c.prompt_ids)
    assert full[n - 1 : n - 1 + len(c.output_ids)].numpy().tobytes() == c.logits.numpy().tobytes()


def _same(a: Completion, b: Completion) -> bool:
    assert a.logits is not None and b.logits is not None
    return a.output_ids == b.output_ids and a.logits.numpy().tobytes() == b.logits.numpy().tobytes()
