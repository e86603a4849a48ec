"""The torch path against sentence-transformers, the reference implementation."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.model.packing import pack
from worker.model.torch_path import TorchForward
from worker.model.weights import MAX_SEQ_LENGTH, MiniLMTokenizer

from .sentences import SENTENCES


def test_corpus_has_fifty_varied_sentences_some_truncated(tokenizer: MiniLMTokenizer) -> None:
    counts = tokenizer.count_tokens(SENTENCES)
    assert len(SENTENCES) >= 50
    assert max(counts) == MAX_SEQ_LENGTH
    assert sum(c == MAX_SEQ_LENGTH for c in counts) >= 3
    assert min(counts) == 2  # the empty string is [CLS] [SEP]


def test_tokenizer_matches_sentence_transformers_exactly(tokenizer: MiniLMTokenizer, reference_model: Any) -> None:
    ours = tokenizer(SENTENCES)
    ref = reference_model.tokenize(SENTENCES)
    assert ours.input_ids.tolist() == ref["input_ids"].tolist()
    assert ours.attention_mask.tolist() == ref["attention_mask"].tolist()


def test_torch_path_matches_sentence_transformers_in_fp32(
    tokenizer: MiniLMTokenizer, torch_forward: TorchForward, reference_model: Any
) -> None:
    ours = torch_forward(pack(tokenizer.encode_ids(SENTENCES))).numpy()
    ref = reference_model.encode(SENTENCES, batch_size=16, convert_to_numpy=True)
    assert ours.shape == ref.shape == (len(SENTENCES), 384)
    assert ours.dtype == np.float32
    cos = (ours * ref).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99999, f"worst cosine {cos.min()} at {int(cos.argmin())}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
