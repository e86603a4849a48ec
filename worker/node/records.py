"""The records of the node's state file (:mod:`worker.node.state`): one dataclass per table and
one enum per state column."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where one of this node's own jobs is."""

    CLAIMING = "claiming"  # claim tx about to be / being sent
    CLAIMED = "claimed"  # claimed on chain, output not computed yet
    COMPUTED = "computed"  # output stored, receipt not sent
    SUBMITTING = "submitting"  # receipt signed, tx about to be / being sent
    DELIVERED = "delivered"  # receipt on chain, challenge window running
    CHALLENGED = "challenged"  # a verifier challenged it
    FINALIZED = "finalized"  # paid (terminal)
    REFUNDED = "refunded"  # lost a dispute or refunded after its deadline (terminal)
    ABANDONED = "abandoned"  # lost the claim race or ran out of time (terminal)


class CandidateState(StrEnum):
    """A posted job this node (as provider) might claim."""

    OPEN = "open"  # may be claimed once its input is there
    CLAIMED = "claimed"  # claimed: a JobRow follows it from here
    GONE = "gone"  # taken by another, expired, unusable input or refused


class Verdict(StrEnum):
    """What this node (as verifier) made of another provider's receipt."""

    PENDING = "pending"  # not decided yet
    UNSAMPLED = "unsampled"  # the protocol's sample skipped it
    INCOMPARABLE = "incomparable"  # another runtime or GPU class: no bitwise check possible
    UNCHECKABLE = "uncheckable"  # the input cannot be re-executed
    MATCH = "match"  # re-execution gave the same output
    MISMATCH = "mismatch"  # re-execution differs: to challenge
    CHALLENGED = "challenged"  # challenge sent
    MOOT = "moot"  # the job moved on (finalized, challenged by another...)
    EXPIRED = "expired"  # the challenge window closed first


class Vote(StrEnum):
    """This node's part in a dispute."""

    NONE = "none"  # a party, not a member
    PENDING = "pending"  # a member that has not committed yet
    COMMITTED = "committed"
    REVEALED = "revealed"
    ABSTAINED = "abstained"  # cannot re-execute on its runtime / GPU class
    MISSED = "missed"  # a phase ended before it acted


@dataclass
class JobRow:
    job_id: int
    phase: Phase
    input_hash: str
    deadline: int
    output_blob: str | None = None
    output_hash: str | None = None
    units: int | None = None
    signature: str | None = None
    challenge_end: int | None = None
    claim_tx: str | None = None
    receipt_tx: str | None = None
    finalize_tx: str | None = None
    attempts: int = 0
    note: str | None = None
    updated_at: float = 0.0


@dataclass
class CandidateRow:
    job_id: int
    input_hash: str
    deadline: int
    state: CandidateState = CandidateState.OPEN
    attempts: int = 0
    next_try: float = 0.0
    note: str | None = None


@dataclass
class CheckRow:
    """A receipt this node (as verifier) considered for re-execution."""

    job_id: int
    provider: str
    block: int
    output_hash: str
    runtime_hash: str
    gpu_class: str
    challenge_end: int
    verdict: str = Verdict.PENDING
    """A :class:`Verdict` (checked on write; the verifier duty still assigns its values as strings)."""
    challenge_tx: str | None = None
    note: str | None = None
    updated_at: float = 0.0


@dataclass
class DisputeRow:
    """A dispute this node sits on (``member``) or is a party to (provider or challenger)."""

    job_id: int
    member: int
    commit_end: int
    reveal_end: int
    vote: str = Vote.NONE
    """A :class:`Vote` (checked on write; the committee duty still assigns its values as strings)."""
    output_hash: str | None = None
    units: int | None = None  # the units this node computed: the vote is on (output, units)
    salt: str | None = None
    commit_tx: str | None = None
    reveal_tx: str | None = None
    resolved: int = 0
    outcome: str | None = None
    updated_at: float = 0.0
