"""Seeded sampling: a pure function of (logits, parameters, seed, position)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.model.errors import InvalidInputError
from worker.model.llm import SamplingParams, sample, token_logprobs, uniform_noise
from worker.model.llm.sampling import kept_tokens


def test_noise_is_a_function_of_seed_position_and_token_only() -> None:
    ids = np.arange(49152, dtype=np.int64)
    u = uniform_noise(7, 100, ids)
    assert u.tobytes() == uniform_noise(7, 100, ids).tobytes()
    assert ((u > 0) & (u < 1)).all()
    assert abs(float(u.mean()) - 0.5) < 0.01
    # One token's noise does not depend on which other tokens are asked about.
    assert uniform_noise(7, 100, ids[[5, 77]]).tolist() == [u[5], u[77]]
    assert not np.array_equal(u, uniform_noise(8, 100, ids))
    assert not np.array_equal(u, uniform_noise(7, 101, ids))


def test_temperature_zero_is_the_arg_max_with_the_lowest_id_on_ties() -> None:
    logits = torch.tensor([0.0, 3.0, -1.0, 3.0])
    assert sample(logits, SamplingParams(temperature=0.0), 0) == 1


def test_top_k_one_and_a_tiny_top_p_are_greedy_whatever_the_seed() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    best = int(logits.argmax())
    for seed in range(20):
        assert sample(logits, SamplingParams(top_k=1, seed=seed), seed) == best
        assert sample(logits, SamplingParams(top_p=1e-6, seed=seed), seed) == best


def test_top_k_and_top_p_keep_the_expected_tokens() -> None:
    logits = torch.log(torch.tensor([0.05, 0.5, 0.3, 0.15]))
    ids, _ = kept_tokens(logits, SamplingParams(top_k=2))
    assert ids.tolist() == [1, 2]
    ids, _ = kept_tokens(logits, SamplingParams(top_p=0.8))
    assert ids.tolist() == [1, 2]  # 0.5 + 0.3 reaches 0.8
    ids, _ = kept_tokens(logits, SamplingParams(top_p=0.81))
    assert ids.tolist() == [1, 2, 3]


def test_sampled_frequencies_follow_the_softmax_of_logits_over_temperature() -> None:
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    logits = torch.tensor(np.log(probs) * 0.5, dtype=torch.float32)  # temperature 0.5 undoes the 0.5
    params = SamplingParams(temperature=0.5, seed=123)
    n = 8000
    counts = np.bincount([sample(logits, params, pos) for pos in range(n)], minlength=4)
    # Within 4 standard deviations of a multinomial draw.
    assert np.all(np.abs(counts / n - probs) < 4 * np.sqrt(probs * (1 - probs) / n))


def test_the_same_seed_gives_the_same_tokens_and_another_seed_other_tokens() -> None:
    logits = torch.zeros(1000)
    a = [sample(logits, SamplingParams(seed=1), p) for p in range(50)]
    assert a == [sample(logits, SamplingParams(seed=1), p) for p in range(50)]
    assert a != [sample(logits, SamplingParams(seed=2), p) for p in range(50)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0},
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"seed": -1},
        {"seed": 2**63},
        {"stop": ("",)},
        {"stop": ("a", "b", "c", "d", "e")},
    ],
)
def test_invalid_sampling_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_logprobs_are_the_log_softmax_of_the_raw_row_with_the_k_most_likely_first_and_ties_by_lower_id() -> None:
    logits = torch.tensor([1.0, 3.0, -2.0, 3.0, 0.5])
    want = torch.log_softmax(logits, dim=0)
    lp = token_logprobs(logits, 2, 3)
    assert lp.token_id == 2 and lp.logprob == float(want[2])
    assert [i for i, _ in lp.top] == [1, 3, 0]
    assert [v for _, v in lp.top] == [float(want[1]), float(want[3]), float(want[0])]
    assert token_logprobs(logits, 1, 0).top == ()
    # Temperature, top-k and top-p change what is sampled, not the raw log probabilities.
    assert token_logprobs(logits / 0.5, 1, 0).logprob != lp.top[0][1]


def test_logprobs_are_refused_beyond_twenty_alternatives_or_on_a_matrix() -> None:
    with pytest.raises(InvalidInputError):
        SamplingParams(logprobs=21)
    with pytest.raises(InvalidInputError):
        SamplingParams(logprobs=-1)
    with pytest.raises(InvalidInputError):
        token_logprobs(torch.zeros(2, 3), 0, 1)
