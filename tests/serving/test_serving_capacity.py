"""Capacity follows stake: a provider's unsettled, challengeable value stays within what its stake
backs (``HEARTH_SERVING_CAPACITY_PER_STAKE_TOKEN`` payment-token wei per whole HST). "provider"
(eu, cheapest) backs only a few requests with its 500 HST here; the gateway fills it, is refused
with ``503 capacity`` and a ``Retry-After``, and routes the client's later requests to
"verifier" without failing any, nor trying the full provider again meanwhile. Once the
provider's batches leave their challenge window (the chain's clock moved past it) its capacity
is back. The same stack then serves the dashboard's providers page (headless Chromium through
Playwright, Debian's /usr/bin/chromium), which shows both providers with the gateway's
measurements, their stake and capacity left and their settlement record."""

from __future__ import annotations

import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_stack import ServingStack, api_key, serving_stack  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TEXT = "capacity follows stake"
#: 500 HST x 3 wei per HST: 1,500 wei of unsettled value, a few requests at 100 wei a token
PER_STAKE_TOKEN = 3
PROVIDERS = {
    "provider": ("eu", 100, {"HEARTH_SERVING_COLLECT_THRESHOLD": "1",
                             "HEARTH_SERVING_CAPACITY_PER_STAKE_TOKEN": str(PER_STAKE_TOKEN)}),
    "verifier": ("us", 200, {"HEARTH_SERVING_COLLECT_THRESHOLD": "1"}),
}


@pytest.fixture(scope="module")
def stack(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    with serving_stack(devnet, chain, tmp_path_factory.mktemp("capacity"), PROVIDERS) as st:
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
    assert stats.at_capacity == 1 and stats.failed == 0 and stats.served == fits
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.mark.browser
@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium (`make browser`)")
def test_the_providers_page_shows_both_serving_providers_with_their_measurements_and_record(
    browser: Any, stack: ServingStack,
) -> None:
    key = api_key(stack, "client")
    r = stack.http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["hello us"]},
                        headers={"authorization": f"Bearer {key}", "x-hearth-region": "us"})
    assert r.status_code == 200, r.text
    end = time.monotonic() + 30
    while not all(p["batches_committed"] for p in stack.http.get("/v1/serving/providers").json()):
        assert time.monotonic() < end, "the providers' batches never reached the index"
        time.sleep(0.2)
    served = {p["address"]: p["requests_served"] for p in stack.http.get("/v1/serving/providers").json()}

    ctx = browser.new_context(viewport={"width": 1500, "height": 900})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(stack.base_url + "/#/providers")
        rows = page.locator("#serving-providers tbody tr[data-serving-provider]")
        rows.first.wait_for(timeout=15_000)
        assert rows.count() == 2
        for role, (region, price) in {"provider": ("eu", "0.000100"), "verifier": ("us", "0.000200")}.items():
            address = stack.address(role)
            row = page.locator(f'#serving-providers tr[data-serving-provider="{address}"]')
            cells = [c.inner_text() for c in row.locator("td").all()]
            assert cells[0] == f"{address[:6]}…{address[-4:]}"
            assert cells[1] == region and cells[2] == price
            assert cells[3] != "–"  # the gateway measured its latency
            assert cells[5] == "500.00"  # stake, HST
            assert 0 <= float(cells[6]) <= (0.0015 if role == "provider" else 500)  # capacity left, hUSD
            assert int(row.locator('[data-field="requests_served"]').inner_text()) == served[address] >= 1
            assert int(row.locator('[data-field="batches_committed"]').inner_text()) >= 1
            assert row.locator('[data-field="challenges"]').inner_text() == "0"
            assert row.locator('[data-field="slashes"]').inner_text() == "0"
            assert row.locator('[data-field="vouchers_collected"]').inner_text().isdigit()
    finally:
        ctx.close()
    assert not errors, errors
