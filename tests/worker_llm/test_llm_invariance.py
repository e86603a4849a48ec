"""Batch invariance, bitwise: a request's tokens and logits do not depend on its batch.

Row blocks are `ROW_BLOCK = LOGIT_BLOCK = 32` rows (the last one padded to at least `MIN_ROWS
= 1` row, that is not padded, where the BLAS keeps rows independent of the row count) and
attention blocks `ATTN_BLOCK = 16` query tokens, so batches of 1, 2, 3, 8, 17 and 33 decode rows
sit on both sides of every block boundary (4, where a BLAS switches from its small-M kernels, 16
and 32). Small random-weight Llama configs
cover the combinations; a few steps of the real SmolLM2 check the same on the real shapes.
"""

from __future__ import annotations

import random

import pytest
import torch

from worker.model._mkl import strict_cnr_active
from worker.model.llm import (
    ATTN_BLOCK,
    LOGIT_BLOCK,
    MIN_ROWS,
    ROW_BLOCK,
    Completion,
    Engine,
    LlamaForward,
    SamplingParams,
    teacher_forced_logits,
)

BATCH_SIZES = [1, 2, 3, 8, 17, 33]
N_REQUESTS = 33


def _requests(vocab: int, n: int, seed: int) -> list[tuple[list[int], SamplingParams]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(1, 40))]
        params = SamplingParams(
            max_tokens=rng.randint(1, 12),
            temperature=rng.choice([0.0, 0.6, 1.0, 1.5]),
            top_p=rng.choice([1.0, 0.9, 0.5]),
            top_k=rng.choice([0, 1, 20]),
            seed=rng.randrange(2**63),
            ignore_eos=True,
        )
        out.append((prompt, params))
    return out


def _run(
    forward: LlamaForward,
    reqs: list[tuple[list[int], SamplingParams]],
    order: list[int],
    *,
    chunk: int = 32,
    max_batch_tokens: int = 512,
    max_running: int = 64,
) -> dict[int, Completion]:
    engine = Engine(
        forward,
        record_logits=True,
        prefill_chunk=chunk,
        max_batch_tokens=max_batch_tokens,
        max_running=max_running,
        num_pages=512,
    )
    for i in order:
        engine.add(str(i), reqs[i][0], reqs[i][1])
    return {int(k): v for k, v in engine.run().items()}


def _same(a: Completion, b: Completion) -> bool:
    assert a.logits is not None and b.logits is not None
    return a.output_ids == b.output_ids and a.logits.numpy().tobytes() == b.logits.numpy().tobytes()


@pytest.fixture(scope="module")
def reqs(tiny_forward: LlamaForward) -> list[tuple[list[int], SamplingParams]]:
    return _requests(tiny_forward.config.vocab_size, N_REQUESTS, seed=5)


@pytest.fixture(scope="module")
def alone(tiny_forward: LlamaForward, reqs: list[tuple[list[int], SamplingParams]]) -> dict[int, Completion]:
    return {i: _run(tiny_forward, reqs, [i])[i] for i in range(len(reqs))}


def test_row_blocks_are_the_thresholds_the_batch_sizes_straddle() -> None:
    assert (ROW_BLOCK, LOGIT_BLOCK, ATTN_BLOCK) == (32, 32, 16)
    for block in (ROW_BLOCK, LOGIT_BLOCK, ATTN_BLOCK):
        assert any(s <= block for s in BATCH_SIZES) and any(block < s <= 2 * block for s in BATCH_SIZES)
    assert any(s > 2 * ATTN_BLOCK for s in BATCH_SIZES)


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_tokens_and_logits_are_identical_alone_and_in_a_batch(
    tiny_forward: LlamaForward,
    reqs: list[tuple[list[int], SamplingParams]],
    alone: dict[int, Completion],
    size: int,
) -> None:
    idx = random.Random(size).sample(range(len(reqs)), size)
    # max_running = size: exactly `size` requests decode together once prefilled.
    together = _run(tiny_forward, reqs, idx, max_running=size)
    for i in idx:
        assert _same(together[i], alone[i]), f"request {i} in a batch of {size}"


def test_tokens_and_logits_do_not_depend_on_submission_order(
    tiny_forward: LlamaForward, reqs: list[tuple[list[int], SamplingParams]], alone: dict[int, Completion]
) -> None:
    order = list(range(len(reqs)))
    random.Random(9).shuffle(order)
    together = _run(tiny_forward, reqs, order, max_batch_tokens=40)
    assert all(_same(together[i], alone[i]) for i in order)


@pytest.mark.parametrize("chunk", [1, 7, 32])
def test_tokens_and_logits_do_not_depend_on_prefill_chunking(
    tiny_forward: LlamaForward,
    reqs: list[tuple[list[int], SamplingParams]],
    alone: dict[int, Completion],
    chunk: int,
) -> None:
    idx = list(range(0, len(reqs), 3))
    together = _run(tiny_forward, reqs, idx, chunk=chunk)
    assert all(_same(together[i], alone[i]) for i in idx)


def test_decoding_equals_a_teacher_forced_prefill_of_prompt_and_output(
    tiny_forward: LlamaForward, reqs: list[tuple[list[int], SamplingParams]], alone: dict[int, Completion]
) -> None:
    for i in range(0, len(reqs), 4):
        c = alone[i]
        assert c.logits is not None
        for chunk in (5, 64):
            full = teacher_forced_logits(tiny_forward, list(c.prompt_ids) + list(c.output_ids), chunk=chunk)
            n = len(c.prompt_ids)
            rows = full[n - 1 : n - 1 + len(c.output_ids)]
            assert rows.numpy().tobytes() == c.logits.numpy().tobytes()


def test_a_last_row_block_padded_to_min_rows_gives_the_bytes_of_a_full_block(
    tiny_forward: LlamaForward, reqs: list[tuple[list[int], SamplingParams]], alone: dict[int, Completion]
) -> None:
    """With `[in, out]` weights this BLAS keeps rows independent of the row count from 1 row up,
    so the engine does not pad a lone decoding row; a forward that pads every block to 32 (as on
    a BLAS without that property) gives the same bytes, so the runtime is one either way."""
    assert tiny_forward.min_rows == MIN_ROWS == 1
    full = LlamaForward(tiny_forward.weights)
    full.min_rows = ROW_BLOCK
    assert full._padded(1, ROW_BLOCK) == 32 and tiny_forward._padded(1, ROW_BLOCK) == 1  # noqa: SLF001
    assert tiny_forward._padded(3, ROW_BLOCK) == 3 and tiny_forward._padded(33, ROW_BLOCK) == 33  # noqa: SLF001
    for i in range(0, len(reqs), 6):
        assert _same(_run(full, reqs, [i])[i], alone[i])
    idx = list(range(5))
    together = _run(full, reqs, idx, max_running=5)
    assert all(_same(together[i], alone[i]) for i in idx)


def test_the_non_invariant_path_computes_the_same_function_within_float_tolerance(
    tiny_forward: LlamaForward, reqs: list[tuple[list[int], SamplingParams]], alone: dict[int, Completion]
) -> None:
    fast = LlamaForward(tiny_forward.weights, invariant=False)
    for i in range(0, len(reqs), 5):
        c = alone[i]
        assert c.logits is not None
        full = teacher_forced_logits(fast, list(c.prompt_ids) + list(c.output_ids), chunk=7)
        n = len(c.prompt_ids)
        torch.testing.assert_close(full[n - 1 : n - 1 + len(c.output_ids)], c.logits, rtol=1e-4, atol=1e-4)


def test_outputs_do_not_depend_on_the_thread_count(
    tiny_forward: LlamaForward, reqs: list[tuple[list[int], SamplingParams]], alone: dict[int, Completion]
) -> None:
    if not strict_cnr_active():
        pytest.skip("MKL strict CNR mode unavailable: GEMMs may depend on threads")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        together = _run(tiny_forward, reqs, list(range(8)))
    finally:
        torch.set_num_threads(before)
    assert all(_same(together[i], alone[i]) for i in range(8))


def test_real_model_tokens_and_logits_are_identical_alone_in_a_batch_and_teacher_forced(
    smol_forward: LlamaForward,
) -> None:
    vocab = smol_forward.config.vocab_size
    rng = random.Random(1)
    reqs = [
        ([rng.randrange(vocab) for _ in range(n)], SamplingParams(max_tokens=3, temperature=t, seed=s, ignore_eos=True))
        for n, t, s in ((5, 0.0, 1), (17, 0.8, 2))
    ]
    assert smol_forward.min_rows == MIN_ROWS  # the real shapes keep rows independent too
    alone = {i: _run(smol_forward, reqs, [i])[i] for i in range(2)}
    together = _run(smol_forward, reqs, [1, 0], chunk=7)
    padded = LlamaForward(smol_forward.weights)
    padded.min_rows = ROW_BLOCK  # every block padded to 32 rows: the same bytes
    for i in range(2):
        assert _same(together[i], alone[i])
        assert _same(_run(padded, reqs, [i])[i], alone[i])
    c = alone[1]
    assert c.logits is not None
    full = teacher_forced_logits(smol_forward, list(c.prompt_ids) + list(c.output_ids), chunk=32)
    n = len(c.prompt_ids)
    assert full[n - 1 : n - 1 + len(c.output_ids)].numpy().tobytes() == c.logits.numpy().tobytes()
