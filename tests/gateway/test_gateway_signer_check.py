"""The gateway's cached ``isValidSigner`` check (``gateway.serving.signer_authorized``) when the
chain's RPC fails: the last answer is used while there is one, else a 503 ``chain_unavailable``
(never a 500). The RPC failure is made by a stand-in contract call: the fault run
(``tests/deploy/test_faults.py``) makes the same failures with a real flaky proxy."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import serving
from gateway.errors import UnavailableError


class FlakyCall:
    """``escrow.functions.isValidSigner(wallet, signer).call()`` answering ``answers`` in turn
    (an exception instance is raised)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def isValidSigner(self, wallet: str, signer: str) -> Any:  # noqa: N802 - the contract's name
        return SimpleNamespace(call=self._call)

    def _call(self) -> bool:
        self.calls += 1
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return bool(a)


def ctx_with(call: FlakyCall, signer: str) -> Any:
    return SimpleNamespace(serving=SimpleNamespace(signer=signer),
                           chain=SimpleNamespace(hearth=SimpleNamespace(escrow=SimpleNamespace(functions=call))))


def test_an_rpc_failure_with_no_earlier_answer_is_a_503_chain_unavailable() -> None:
    call = FlakyCall(ConnectionError("Remote end closed connection without response"))
    with pytest.raises(UnavailableError) as exc:
        serving.signer_authorized(ctx_with(call, "0xsigner-a"), "0xwallet-a")
    assert exc.value.status_code == 503 and exc.value.reason == "chain_unavailable"
    assert "ConnectionError" in exc.value.message


def test_an_rpc_failure_after_an_answer_reuses_that_answer_and_a_later_success_refreshes_it() -> None:
    call = FlakyCall(True, ConnectionError("dropped"), False)
    ctx = ctx_with(call, "0xsigner-b")
    assert serving.signer_authorized(ctx, "0xwallet-b", ttl_s=0.0) is True
    time.sleep(0.001)
    assert serving.signer_authorized(ctx, "0xwallet-b", ttl_s=0.0) is True  # the RPC failed: last answer
    assert serving.signer_authorized(ctx, "0xwallet-b", ttl_s=0.0) is False  # revoked since: the new answer
    assert call.calls == 3
