"""The job-record fold: how each market event changes a job's record (``IJobMarket``'s rule).

The market stores a job as a commitment; its full record is rebuilt from its events, by the
CLI and the worker (:func:`apply_job_event` over :class:`contracts.types.Job`) and by the
indexer (the ``jobs`` rows of ``indexer.projector``). Both take the changes from
:func:`job_changes`, so the rule is written once. The changes copy the event's arguments as they
come, so each caller keeps its own form of a value (web3's ``bytes``, the indexer's ``0x`` hex);
what a record holds before its first event (zero provider, payment, output hash) is the
caller's record default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.jobstate import EVENT_STATUS
from contracts.types import ZERO32, ZERO_ADDRESS, Job, Outcome, Status

#: event -> {record field (``Job``'s names): the event argument it copies}
COPIED: dict[str, dict[str, str]] = {
    "JobPosted": {
        "client": "client", "model_id": "modelId", "input_hash": "inputHash", "max_payment": "maxPayment",
        "price_per_unit": "pricePerUnit", "deadline": "deadline", "treasury": "treasury", "fee_bps": "feeBps",
        # IJobMarket's rule: until delivery challengeEnd holds the window fixed at posting.
        "challenge_end": "challengeWindow",
    },
    "JobClaimed": {"provider": "provider", "collateral": "collateral", "claim_expiry": "claimExpiry"},
    "ReceiptSubmitted": {
        "payment": "payment", "output_hash": "outputHash", "units": "units", "gpu_class": "gpuClass",
        "challenge_end": "challengeEnd",
    },
}


def job_changes(name: str, args: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record fields (``Job``'s names, ``status`` a :class:`Status`) that market event
    ``name`` sets; None when the event leaves the record as it is."""
    if name == "ClaimReleased":
        return {"provider": ZERO_ADDRESS, "collateral": 0, "claim_expiry": 0, "status": Status.POSTED}
    if name == "DisputeResolved":
        outcome = Outcome(int(args["outcome"]))
        if outcome == Outcome.ESCALATED:
            return None  # governance decides later; the job stays challenged
        if outcome == Outcome.PROVIDER_WON:
            return {"status": Status.DELIVERED, "challenge_end": args["challengeEnd"]}
        return {"status": Status.REFUNDED}  # JobRefunded follows in the same transaction
    status = EVENT_STATUS.get(name)
    if status is None:
        return None
    changes: dict[str, Any] = {field: args[arg] for field, arg in COPIED.get(name, {}).items()}
    changes["status"] = status
    return changes


def apply_job_event(job: Job | None, name: str, args: Mapping[str, Any]) -> Job | None:
    """Folds one market event into a job record (None until the job's ``JobPosted``)."""
    changes = job_changes(name, args)
    if changes is not None:
        changes = {k: bytes(v) if isinstance(v, bytes) else v for k, v in changes.items()}
    if name == "JobPosted":
        assert changes is not None
        return Job(provider=ZERO_ADDRESS, payment=0, collateral=0, output_hash=ZERO32, **changes)
    if job is None or changes is None:
        return job
    return job.with_(**changes)
