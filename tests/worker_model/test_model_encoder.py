"""Encoder API: embeddings, units, canonical output bytes and the receipt hashes."""

from __future__ import annotations

import numpy as np
import pytest
from eth_hash.auto import keccak

from worker.model import (
    KERNEL_VERSION,
    Encoder,
    InvalidInputError,
    UnsupportedConfigError,
    output_bytes,
    output_hash,
    runtime_descriptor,
    runtime_hash,
)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(backend="torch", dtype="fp32", device="cpu")


def test_encode_returns_unit_norm_float32_rows(encoder: Encoder) -> None:
    out = encoder.encode(["first sentence", "second", ""])
    assert out.shape == (3, 384)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert encoder.encode([]).shape == (0, 384)


def test_encode_is_deterministic_across_calls(encoder: Encoder) -> None:
    texts = ["deterministic output", "across calls"]
    assert output_bytes(encoder.encode(texts)) == output_bytes(encoder.encode(texts))


def test_units_count_non_padding_tokens_including_special_tokens(encoder: Encoder) -> None:
    assert encoder.count_tokens(["hello world", "", "word " * 1000]) == [4, 2, 256]


def test_output_bytes_are_little_endian_float32_in_row_order() -> None:
    emb = np.array([[1.0, -2.0], [0.5, 0.0]], dtype=np.float32)
    assert output_bytes(emb) == np.array([1.0, -2.0, 0.5, 0.0], dtype="<f4").tobytes()
    assert output_bytes(emb[0]) == bytes.fromhex("0000803f000000c0")
    assert output_bytes(emb.T) == np.array([1.0, 0.5, -2.0, 0.0], dtype="<f4").tobytes()


def test_output_bytes_reject_other_dtypes() -> None:
    with pytest.raises(InvalidInputError):
        output_bytes(np.zeros(384, dtype=np.float64))


def test_output_hash_is_keccak_of_output_bytes(encoder: Encoder) -> None:
    emb = encoder.encode(["hash me"])[0]
    assert output_hash(emb) == keccak(output_bytes(emb))
    assert len(output_hash(emb)) == 32
    assert len(output_bytes(emb)) == 384 * 4


def test_runtime_hash_names_backend_dtype_and_kernel_version(encoder: Encoder) -> None:
    desc = runtime_descriptor("torch", "fp32")
    assert desc == f"hearth-minilm-l6-v2/backend=torch/dtype=fp32/kernels={KERNEL_VERSION}"
    assert encoder.runtime_hash() == keccak(desc.encode()) == runtime_hash("torch", "fp32")
    hashes = {runtime_hash(b, d) for b in ("torch", "triton") for d in ("fp32", "fp16", "bf16")}
    assert len(hashes) == 6


def test_encoder_rejects_unsupported_configurations() -> None:
    with pytest.raises(UnsupportedConfigError):
        Encoder(backend="onnx")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedConfigError):
        Encoder(dtype="bf16", device="cpu")


def test_encoder_rejects_a_bare_string(encoder: Encoder) -> None:
    with pytest.raises(InvalidInputError):
        encoder.encode("not a list")


def test_triton_backend_encoder_runs_interpreted_on_cpu() -> None:
    pytest.importorskip("triton")
    from worker.kernels import interpreting

    if not interpreting():
        pytest.skip("needs TRITON_INTERPRET=1")
    enc = Encoder(backend="triton", dtype="fp32", device="cpu")
    ref = Encoder(backend="torch", dtype="fp32", device="cpu")
    got = enc.encode(["short"])
    assert float((got * ref.encode(["short"])).sum()) > 0.99999
