"""The job-state vocabulary, derived from the one enum :class:`contracts.types.Status`.

The chain stores a job's state as ``Status`` (a ``uint8``); the index, the API and the
dashboard write it as its label (``Status.POSTED.label == "posted"``). Every service takes
its labels and state groups from here, so a new state is added in one place.
"""

from __future__ import annotations

from enum import StrEnum

from contracts.types import Outcome, Status

#: every state a job can be in (``NONE`` is "no such job"), in lifecycle order
STATES: tuple[Status, ...] = tuple(s for s in Status if s is not Status.NONE)
#: their labels, as the index and the API write them
LABELS: tuple[str, ...] = tuple(s.label for s in STATES)
#: states in which something can still happen to the job
OPEN: frozenset[Status] = frozenset({Status.POSTED, Status.CLAIMED, Status.DELIVERED, Status.CHALLENGED})
#: states that end a job
TERMINAL: frozenset[Status] = frozenset({Status.FINALIZED, Status.REFUNDED})
#: states in which a provider has delivered an output that stands (not refunded)
DELIVERED: frozenset[Status] = frozenset({Status.DELIVERED, Status.CHALLENGED, Status.FINALIZED})
#: states past delivery (a receipt was posted, whatever came of it)
WITH_RESULT: frozenset[Status] = frozenset({Status.DELIVERED, Status.CHALLENGED, Status.FINALIZED, Status.REFUNDED})

#: the state each job event moves a job into
EVENT_STATUS: dict[str, Status] = {
    "JobPosted": Status.POSTED,
    "JobClaimed": Status.CLAIMED,
    "ReceiptSubmitted": Status.DELIVERED,
    "JobChallenged": Status.CHALLENGED,
    "JobFinalized": Status.FINALIZED,
    "JobRefunded": Status.REFUNDED,
}


class ChallengeState(StrEnum):
    """A challenged job's dispute as the index and the API write it (``challenges.status``): its
    phase (``IJobMarket.Phase``) while it runs, its outcome (``IJobMarket.Outcome``) once settled."""

    OPEN = "open"
    """challenged, the committee not drawn yet (``Phase.AWAITING_DRAW``)"""
    VOTING = "voting"
    NO_COMMITTEE = "no_committee"
    ESCALATED = "escalated"
    PROVIDER_WON = "provider_won"
    CHALLENGER_WON = "challenger_won"
    """``Outcome.PROVIDER_LOST``"""
    NEUTRAL = "neutral"


#: how a settled (or escalated) dispute is written
OUTCOME_STATE: dict[Outcome, ChallengeState] = {
    Outcome.PROVIDER_WON: ChallengeState.PROVIDER_WON,
    Outcome.PROVIDER_LOST: ChallengeState.CHALLENGER_WON,
    Outcome.NEUTRAL: ChallengeState.NEUTRAL,
    Outcome.ESCALATED: ChallengeState.ESCALATED,
}


def labels(states: frozenset[Status] | tuple[Status, ...]) -> tuple[str, ...]:
    """The labels of ``states`` in lifecycle order (for SQL ``IN`` clauses and API enums)."""
    return tuple(s.label for s in STATES if s in states)


def parse(label: str) -> Status:
    """The state a label names; raises ``ValueError`` for anything else."""
    for s in STATES:
        if s.label == label:
            return s
    raise ValueError(f"unknown job state {label!r}: one of {', '.join(LABELS)}")
