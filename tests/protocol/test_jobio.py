"""The embedding job formats (shared with the gateway)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common.blobs import blob_id
from contracts import jobio
from contracts.errors import InvalidJobInputError
from worker.model import output_bytes


def test_input_round_trips_and_a_single_string_is_one_text() -> None:
    blob = jobio.encode_input(["héllo", "wörld"])
    assert blob == '{"texts":["héllo","wörld"]}'.encode()
    assert jobio.decode_input(blob) == ["héllo", "wörld"]
    assert jobio.decode_input(b'"just one"') == ["just one"]
    assert jobio.encode_input("just one") == b'{"texts":["just one"]}'
    assert "0x" + jobio.input_hash(blob).hex() == blob_id(blob)


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff\xfe",
        b"not json",
        b"[]",
        b'{"texts": []}',
        b'{"texts": [1]}',
        b'{"texts": ["a"], "extra": 1}',
        b"42",
        b'{"text": "a"}',
    ],
)
def test_malformed_inputs_are_refused(bad: bytes) -> None:
    with pytest.raises(InvalidJobInputError):
        jobio.decode_input(bad)


def test_input_size_and_count_limits() -> None:
    with pytest.raises(InvalidJobInputError):
        jobio.decode_input(jobio.encode_input(["x" * 100]), max_bytes=50)
    with pytest.raises(InvalidJobInputError):
        jobio.encode_input(["a"] * (jobio.MAX_TEXTS + 1))


def test_output_bytes_match_the_model_runtime_and_units_are_tokens(encoder: Any) -> None:
    texts = ["one", "two words here"]
    emb = encoder.encode(texts)
    out = jobio.encode_output(emb)
    assert out == output_bytes(emb) and len(out) == 2 * jobio.BYTES_PER_EMBEDDING
    assert np.array_equal(jobio.decode_output(out), emb)
    with pytest.raises(InvalidJobInputError):
        jobio.decode_output(out[:-1])
    with pytest.raises(InvalidJobInputError):
        jobio.encode_output(emb.astype(np.float64))  # type: ignore[arg-type]


def test_jobio_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, contracts.jobio; print('torch' in sys.modules, 'web3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
