"""Capacity follows stake: a provider's unsettled, challengeable value stays within what its stake
backs (``HEARTH_SERVING_CAPACITY_PER_STAKE_TOKEN`` payment-token wei per whole HST). "provider"
(eu, cheapest) backs only a few requests with its 500 HST here; the gateway fills it, is refused
with ``503 capacity`` and a ``Retry-After``, and routes the client's later requests to
"verifier" without failing any, nor trying the full provider again meanwhile. Once the
provider's batches leave their challenge window (the chain's clock moved past it) its capacity
is back."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_stack import ProviderSpec, ServingStack, api_key, open_stack  # noqa: E402

TEXT = "capacity follows stake"
#: 500 HST x 3 wei per HST: 1,500 wei of unsettled value, a few requests at 100 wei a token
PER_STAKE_TOKEN = 3
PROVIDERS = {
    "provider": ProviderSpec("eu", 100, env={"HEARTH_SERVING_CAPACITY_PER_STAKE_TOKEN": str(PER_STAKE_TOKEN)}),
    "verifier": ProviderSpec("us", 200),
}


@pytest.fixture(scope="module")
def stack(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    with open_stack(devnet, chain, tmp_path_factory.mktemp("capacity"), PROVIDERS) as st:
        yield st


def paid_request(st: ServingStack, role: str, texts: list[str]) -> httpx.Response:
    """A request straight to a provider endpoint, paid by the client's own signature."""
    from common.tokenizer import TextTokenizer
    from contracts.serving import PAYMENT_HEADER, encode_payment
    from contracts.settlement import PaymentReceipt, sign_payment_receipt

    p = st.providers[role]
    s = st.settlement()
    units = sum(TextTokenizer().count_tokens(texts))
    pr = PaymentReceipt(st.address("client"), p.address, secrets.token_bytes(32), units * p.price, int(time.time()))
    sig = sign_payment_receipt(st.key("client"), pr, s.chain_id, s.escrow.address)
    return httpx.post(f"{p.url}/v1/embeddings", json={"model": st.model_id, "input": texts},
                      headers={PAYMENT_HEADER: encode_payment(pr, sig)}, timeout=30)


def test_a_provider_at_its_stakes_bound_refuses_with_capacity_and_the_gateway_routes_around_it(
    stack: ServingStack, chain: Any,
) -> None:
    from common.tokenizer import TextTokenizer

    st = stack
    key = api_key(st, "client")
    full = st.providers["provider"]
    bound = 500 * PER_STAKE_TOKEN  # the devnet stakes 500 HST per provider
    value = sum(TextTokenizer().count_tokens([TEXT])) * 100
    fits = bound // value
    assert fits >= 1
    answers = []
    for i in range(fits + 3):
        r = st.http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [TEXT]},
                         headers={"authorization": f"Bearer {key}", "x-hearth-region": "eu"})
        assert r.status_code == 200, r.text  # never failed: routed around the full provider
        answers.append((r.json()["hearth"]["provider"], r.json()["hearth"]["attempts"], i))
    served_by = [a for a, _, _ in answers]
    assert served_by[:fits] == [full.address] * fits
    assert set(served_by[fits:]) == {st.address("verifier")}
    # Refused once (the answer's second attempt), then not tried again while at capacity.
    assert [n for _, n, _ in answers[fits:]] == [2] + [1] * (len(answers) - fits - 1)
    stats = st.ctx.serving.router.stats[full.address]
    assert stats.at_capacity == 1 and stats.failed == 0
    status = full.status()
    assert int(status["capacity"]["bound"]) == bound
    assert int(status["capacity"]["exposure"]) == fits * value <= bound
    assert status["served_requests"] == fits

    # Asked directly: 503, the machine-readable reason and when to come back; nothing recorded.
    r = paid_request(st, "provider", [TEXT])
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["reason"] == "capacity" and int(err["details"]["bound"]) == bound
    assert int(r.headers["retry-after"]) >= 1
    assert full.status()["leaves"] == fits

    # Once its batches are past the challenge window, the stake backs new work again.
    end = time.monotonic() + 20
    while full.status()["batches_open"] or full.status()["batches_committed"] == 0:
        assert time.monotonic() < end, "the provider never committed its batch"
        time.sleep(0.1)
    chain.advance(int(st.settlement().params().challenge_window) + 1)
    end = time.monotonic() + 20
    while int(full.status()["capacity"]["exposure"]) != 0:
        assert time.monotonic() < end, "the provider's exposure never fell"
        time.sleep(0.1)
    r = paid_request(st, "provider", [TEXT])
    assert r.status_code == 200, r.text
