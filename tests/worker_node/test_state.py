"""The node's state file: a versioned schema (migrations run once, a newer file is refused) and
state columns that hold their enums' values only."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from worker.node.errors import NodeConfigError
from worker.node.state import (
    MIGRATIONS,
    SCHEMA_VERSION,
    CandidateRow,
    CandidateState,
    CheckRow,
    JobRow,
    NodeState,
    Phase,
    Verdict,
)


def _version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_state_file_is_private_and_at_the_latest_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    NodeState(path).close()
    assert _version(path) == SCHEMA_VERSION == len(MIGRATIONS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_from_before_versioning_keeps_its_rows_and_is_marked_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as db:  # what a node wrote before the schema had a version
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO jobs (job_id, phase, input_hash, deadline, attempts)"
                   " VALUES (7, 'claimed', '0xab', 99, 0)")
    assert _version(path) == 0
    state = NodeState(path)
    assert _version(path) == SCHEMA_VERSION
    row = state.get(JobRow, 7)
    assert row is not None and row.phase is Phase.CLAIMED and row.deadline == 99
    state.close()


def test_a_file_written_by_a_newer_node_is_refused_not_guessed_at(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    NodeState(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(NodeConfigError, match=f"schema version {SCHEMA_VERSION + 1}"):
        NodeState(path)


def test_state_columns_read_back_as_enums_and_refuse_unknown_values(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "state.sqlite")
    state.upsert(JobRow(1, Phase.COMPUTED, "0x01", 10))
    state.upsert(CandidateRow(2, "0x02", 20, CandidateState.GONE))
    state.upsert(CheckRow(3, "0xprovider", 5, "0x03", "0xrt", "cpu", 50, verdict=Verdict.MISMATCH))
    assert state.jobs(Phase.COMPUTED)[0].phase is Phase.COMPUTED
    assert state.select(CandidateRow)[0].state is CandidateState.GONE
    assert state.select(CheckRow, "verdict IN ('mismatch')")[0].verdict is Verdict.MISMATCH
    with pytest.raises(ValueError, match="verdict = 'maybe' is not one of"):
        state.upsert(CheckRow(4, "0xprovider", 5, "0x04", "0xrt", "cpu", 50, verdict="maybe"))
    with pytest.raises(ValueError, match="phase"):
        state.insert_new(JobRow(5, "lost", "0x05", 10))  # type: ignore[arg-type]
    assert state.get(CheckRow, 4) is None and state.get(JobRow, 5) is None
    state.close()
