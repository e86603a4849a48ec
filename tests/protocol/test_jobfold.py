"""The job-record fold is written once (``contracts.jobfold``): the record the CLI and worker
rebuild (``apply_job_event`` over web3's bytes) and the indexer's ``jobs`` row (``0x`` hex)
agree field by field after every event, on every path through a dispute."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from contracts.jobfold import apply_job_event, job_changes
from contracts.jobstate import EVENT_STATUS
from contracts.types import Job, Outcome, Status
from indexer.decode import DecodedEvent
from indexer.projector import fold

CLIENT, PROVIDER, TREASURY = "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20
H = {"model": "0x" + "aa" * 32, "input": "0x" + "bb" * 32, "output": "0x" + "cc" * 32, "gpu": "0x" + "dd" * 32}

POSTED = ("JobPosted", {"client": CLIENT, "modelId": H["model"], "inputHash": H["input"], "maxPayment": 500,
                        "pricePerUnit": 3, "deadline": 9_000, "relayer": CLIENT, "treasury": TREASURY,
                        "feeBps": 250, "challengeWindow": 600})
CLAIMED = ("JobClaimed", {"provider": PROVIDER, "collateral": 77, "claimExpiry": 8_000})
RELEASED = ("ClaimReleased", {"provider": PROVIDER, "penalty": 5})
DELIVERED = ("ReceiptSubmitted", {"provider": PROVIDER, "outputHash": H["output"], "units": 100,
                                  "modelHash": H["model"], "runtimeHash": H["model"], "gpuClass": H["gpu"],
                                  "payment": 300, "challengeEnd": 7_000})
CHALLENGED = ("JobChallenged", {"challenger": TREASURY, "bond": 10, "drawBlock": 50})
FINALIZED = ("JobFinalized", {"provider": PROVIDER, "client": CLIENT, "providerAmount": 290, "fee": 10,
                              "clientRefund": 200, "treasury": TREASURY})
REFUNDED = ("JobRefunded", {"client": CLIENT, "amount": 500, "penalty": 0})


def resolved(outcome: Outcome) -> tuple[str, dict[str, Any]]:
    return "DisputeResolved", {"outcome": int(outcome), "byGovernance": False, "slashed": 0, "challengeEnd": 7_700,
                               "escalationEnd": 9_999}


PATHS = {
    "finalized": [POSTED, CLAIMED, DELIVERED, FINALIZED],
    "released and claimed again": [POSTED, CLAIMED, RELEASED, CLAIMED, DELIVERED],
    "provider won": [POSTED, CLAIMED, DELIVERED, CHALLENGED, resolved(Outcome.PROVIDER_WON), FINALIZED],
    "provider lost": [POSTED, CLAIMED, DELIVERED, CHALLENGED, resolved(Outcome.PROVIDER_LOST), REFUNDED],
    "escalated": [POSTED, CLAIMED, DELIVERED, CHALLENGED, resolved(Outcome.ESCALATED)],
    "expired": [POSTED, REFUNDED],
}


def _web3_form(args: dict[str, Any]) -> dict[str, Any]:
    return {k: bytes.fromhex(v[2:]) if isinstance(v, str) and len(v) == 66 else v for k, v in args.items()}


def _as_row(job: Job) -> dict[str, Any]:
    out = {}
    for f in fields(job):
        v = getattr(job, f.name)
        out[f.name] = v.label if isinstance(v, Status) else "0x" + v.hex() if isinstance(v, bytes) else v
    return out


@pytest.mark.parametrize("path", list(PATHS), ids=list(PATHS))
def test_the_index_row_and_the_rebuilt_record_agree_after_every_event(path: str) -> None:
    job: Job | None = None
    for n, (name, args) in enumerate(PATHS[path], start=1):
        full = {"jobId": 7, **args}
        job = apply_job_event(job, name, _web3_form(full))
        events = [DecodedEvent(b, "0x" + "00" * 32, 1000 + b, f"0x{b:064x}", 0, 0, "0x" + "44" * 20, "JobMarket",
                               nm, {"jobId": 7, **a}) for b, (nm, a) in enumerate(PATHS[path][:n], start=1)]
        row = fold(events)["jobs"][(7,)]
        assert job is not None
        expected = _as_row(job)
        if job.claim_expiry == 0 and row["claim_expiry"] is None:
            expected["claim_expiry"] = None  # the index has no claim expiry before a claim
        if job.gpu_class == bytes(32) and row["gpu_class"] is None:
            expected["gpu_class"] = None
        assert {k: row[k] for k in expected} == expected, (path, name)


def test_every_state_changing_event_has_a_rule() -> None:
    for name in EVENT_STATUS:
        assert job_changes(name, {**POSTED[1], **CLAIMED[1], **DELIVERED[1], **REFUNDED[1]}) is not None, name
    assert job_changes("VoteCommitted", {}) is None
    assert job_changes(*resolved(Outcome.ESCALATED)) is None
