"""The embedding workload's job formats: what a job's input and output blobs contain.

The gateway, clients and worker nodes all use these helpers, so they must not change without
a new model id / runtime hash.

Input blob (its keccak256 is the job's ``inputHash`` and its blob id)
    UTF-8 JSON, either an object ``{"texts": ["first", "second", ...]}`` with 1 to
    :data:`MAX_TEXTS` strings, or a single JSON string ``"text"`` (one input). Other keys are
    refused, so a blob means one thing only. :func:`encode_input` writes the canonical form
    (``{"texts": [...]}``, no spaces, non-ASCII kept as UTF-8); any valid blob is accepted,
    but the hash is over the exact bytes posted.

Output blob (its keccak256 is the receipt's ``outputHash``)
    The embeddings of the texts, in input order, as little-endian IEEE float32 in C order:
    ``n x 384`` values, ``1536 * n`` bytes, no header. Identical to
    ``worker.model.encoder.output_bytes`` of the ``[n, 384]`` array.

Units (the receipt's ``units``, what the client pays for)
    The total non-padding tokens of the texts after truncation to 256 tokens, ``[CLS]`` and
    ``[SEP]`` included (``MiniLMTokenizer.count_tokens`` summed over the texts).

This module depends on numpy only (no torch), so a gateway can import it cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from eth_hash.auto import keccak

from contracts.errors import InvalidJobInputError

EMBEDDING_DIM = 384
BYTES_PER_EMBEDDING = EMBEDDING_DIM * 4
MAX_TEXTS = 2048
MAX_INPUT_BYTES = 1 << 20


def encode_input(texts: str | Sequence[str]) -> bytes:
    """The canonical input blob for ``texts`` (a list, or one string)."""
    items = [texts] if isinstance(texts, str) else list(texts)
    _check_texts(items)
    return json.dumps({"texts": items}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_input(data: bytes, max_bytes: int = MAX_INPUT_BYTES) -> list[str]:
    """The texts of an input blob; raises :class:`InvalidJobInputError` if it is malformed."""
    if len(data) > max_bytes:
        raise InvalidJobInputError(f"input is {len(data)} bytes, more than {max_bytes}")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidJobInputError(f"input is not UTF-8 JSON: {exc}") from None
    if isinstance(value, str):
        items: list[str] = [value]
    elif isinstance(value, dict) and set(value) == {"texts"} and isinstance(value["texts"], list):
        items = value["texts"]
    else:
        raise InvalidJobInputError('input must be {"texts": [...]} or a JSON string')
    _check_texts(items)
    return items


def _check_texts(items: Sequence[object]) -> None:
    if not items:
        raise InvalidJobInputError("input has no texts")
    if len(items) > MAX_TEXTS:
        raise InvalidJobInputError(f"input has {len(items)} texts, more than {MAX_TEXTS}")
    if not all(isinstance(t, str) for t in items):
        raise InvalidJobInputError("every text must be a string")


def input_hash(data: bytes) -> bytes:
    """keccak256 of an input blob: the job's ``inputHash``."""
    return bytes(keccak(data))


def encode_output(embeddings: npt.NDArray[np.float32]) -> bytes:
    """The output blob for an ``[n, 384]`` float32 array."""
    arr = np.asarray(embeddings)
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[1] != EMBEDDING_DIM:
        raise InvalidJobInputError(f"embeddings must be [n, {EMBEDDING_DIM}] float32, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr, dtype="<f4").tobytes()


def decode_output(data: bytes) -> npt.NDArray[np.float32]:
    """The ``[n, 384]`` float32 embeddings of an output blob."""
    if len(data) == 0 or len(data) % BYTES_PER_EMBEDDING:
        raise InvalidJobInputError(f"an output blob is a multiple of {BYTES_PER_EMBEDDING} bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<f4").reshape(-1, EMBEDDING_DIM).astype(np.float32)


def output_hash(data: bytes) -> bytes:
    """keccak256 of an output blob: the receipt's ``outputHash``."""
    return bytes(keccak(data))

