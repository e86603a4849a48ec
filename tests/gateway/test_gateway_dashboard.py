"""The dashboard in headless Chromium (Playwright driving Debian's /usr/bin/chromium): it loads,
shows the providers, follows a job through its states live, and submits a job signed by an
injected EIP-1193 wallet (``window.ethereum`` whose ``eth_signTypedData_v4`` calls back into
Python, which signs with eth_account). Saves a screenshot to docs/dashboard.png."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak
from gateway_stack import Stack, sign_typed

from contracts.types import Receipt, gpu_class_bytes

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
PROVIDER = "verifier2"
WALLET = "client2"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium (`make browser`)"),
]

INJECTED_WALLET = """
(() => {
  const address = "%(address)s";
  window.ethereum = {
    isHearthTestWallet: true,
    async request({method, params}) {
      if (method === "eth_requestAccounts" || method === "eth_accounts") return [address];
      if (method === "eth_chainId") return "0x%(chain_id)x";
      if (method === "eth_signTypedData_v4") return await window.hearthTestSign(params[0], params[1]);
      throw Object.assign(new Error("unsupported method " + method), {code: 4200});
    },
  };
})();
"""


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


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    signed: list[dict[str, Any]] = []

    def sign(address: str, typed_json: str) -> str:
        assert address.lower() == stack.address(WALLET).lower()
        typed = json.loads(typed_json)
        signed.append(typed)
        return sign_typed(stack.key(WALLET), typed)

    ctx = browser.new_context(viewport={"width": 1360, "height": 860})
    pg = ctx.new_page()
    pg.signed = signed
    pg.expose_function("hearthTestSign", sign)
    pg.add_init_script(INJECTED_WALLET % {"address": stack.address(WALLET), "chain_id": stack.hearth.chain_id})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors


def test_the_dashboard_loads_and_shows_the_providers_with_stake_and_status(page: Any, stack: Stack) -> None:
    page.goto(stack.base_url + "/")
    rows = page.locator("#providers-mini tbody tr")
    rows.first.wait_for(timeout=15_000)
    assert rows.count() == 4
    for role in ("provider", "verifier", "verifier2", "cheater"):
        row = page.locator(f'#providers-mini tr[data-provider="{stack.address(role)}"]')
        assert row.locator('[data-status="active"]').count() == 1
        assert "500.00" in row.inner_text() or "490.00" in row.inner_text()
    assert "Active providers" in page.locator("#stats").inner_text()
    assert page.locator("#chain").inner_text().startswith(f"chain {stack.hearth.chain_id}")


def test_the_job_page_follows_a_job_through_its_states_live(page: Any, stack: Stack) -> None:
    stack.approve("client")
    posted = stack.http.post("/v1/jobs", json=stack.signed_job(texts=["watch me move"])).json()
    job_id = posted["job_id"]
    stack.wait_indexed(posted["block_number"])
    page.goto(f"{stack.base_url}/#/jobs/{job_id}")
    status = page.locator("#job-status")
    page.wait_for_selector('#job-status[data-status="posted"]', timeout=15_000)

    h, key = stack.hearth, stack.key(PROVIDER)
    h.claim(key, job_id)
    page.wait_for_selector('#job-status[data-status="claimed"]', timeout=15_000)
    output = os.urandom(1536)
    stack.http.post("/v1/blobs", content=output)
    model = bytes.fromhex(stack.model_id[2:])
    rec = Receipt(job_id, keccak(output), 6, model, bytes.fromhex(stack.devnet.manifest.models[0].runtime_hash[2:]),
                  gpu_class_bytes("cpu"))
    h.submit_receipt(key, rec, h.sign_receipt(key, rec))
    page.wait_for_selector('#job-status[data-status="delivered"]', timeout=15_000)
    page.wait_for_selector('#job-verification[data-verified="true"]', timeout=15_000)
    assert status.inner_text() == "delivered"
    assert [li.get_attribute("data-state") for li in page.locator("#job-timeline li").all()] == \
        ["posted", "claimed", "delivered"]
    assert "0x" + keccak(output).hex() in page.locator("#job-receipt").inner_text()
    # The live feed on the same page saw the transitions too.
    feed = page.locator(f'#feed li[data-job="{job_id}"]')
    assert feed.count() >= 2


def test_the_submit_page_signs_with_the_wallet_and_the_job_appears(page: Any, stack: Stack) -> None:
    wallet = stack.address(WALLET)
    page.goto(stack.base_url + "/#/submit")
    page.click("#connect")
    page.wait_for_function(f"document.querySelector('#account').textContent === '{wallet}'")
    page.fill("#texts", "signed in the browser\nby an injected wallet")
    page.click("#submit")
    page.wait_for_url("**/#/jobs/*", timeout=30_000)
    job_id = int(page.url.rsplit("/", 1)[1])
    page.wait_for_selector('#job-status[data-status="posted"]', timeout=15_000)
    job = stack.http.get(f"/v1/jobs/{job_id}").json()
    assert job["client"] == wallet and job["status"] == "posted"
    kinds = [t["primaryType"] for t in page.signed]
    # client2 never approved the market, so the page asked for a permit first.
    assert kinds in (["Permit", "JobRequest"], ["JobRequest"]) and kinds[-1] == "JobRequest"
    blob = stack.http.get(f"/v1/blobs/{job['input_hash']}").json()
    assert blob == {"texts": ["signed in the browser", "by an injected wallet"]}

    page.evaluate("location.hash = '#/'")  # back to the overview, keeping the live feed it collected
    page.locator("#providers-mini tbody tr").first.wait_for()
    page.wait_for_function("document.querySelectorAll('#stats .card').length === 6")
    page.wait_for_selector(f'#feed-mini li[data-job="{job_id}"]')
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
