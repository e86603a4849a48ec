"""The batch verifier's sample and state file, without a chain: the sample is a deterministic
function of the seed (fixed after the commit) of the documented size; the state file refuses a
newer schema version and another verifier's file, and keeps its place across a reopen."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from eth_utils import keccak

from worker.serving.verifier import MIGRATIONS, VerifierError, VerifierState, sample_indices

ME = "0x" + "aa" * 20


@pytest.mark.parametrize(("count", "rate", "minimum"), [(1, 1000, 1), (10, 1000, 1), (1000, 1000, 1),
                                                        (1025, 250, 4), (3, 0, 0), (3, 10_000, 0)])
def test_a_batch_sample_has_the_documented_size_and_depends_only_on_the_seed(count: int, rate: int,
                                                                              minimum: int) -> None:
    seed = keccak(text="block hash after the commit")
    picked = sample_indices(seed, count, rate, minimum)
    assert picked == sample_indices(seed, count, rate, minimum)
    assert len(picked) == min(count, max(minimum, math.ceil(count * rate / 10_000)))
    assert picked == sorted(set(picked)) and all(0 <= i < count for i in picked)


def test_another_seed_samples_other_leaves() -> None:
    draws = {tuple(sample_indices(keccak(text=str(i)), 1000, 100, 1)) for i in range(20)}
    assert len(draws) == 20


def test_the_state_file_keeps_its_place_and_refuses_a_newer_schema_or_another_verifier(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    st = VerifierState(path, ME)
    st.set_cursor("events", 42)
    st.close()
    st = VerifierState(path, ME)
    assert st.cursor("events", 0) == 42
    assert path.stat().st_mode & 0o777 == 0o600  # it holds vote salts
    st.close()
    with pytest.raises(VerifierError, match="not 0x"):
        VerifierState(path, "0x" + "bb" * 20)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(VerifierError, match="schema version"):
        VerifierState(path, ME)
