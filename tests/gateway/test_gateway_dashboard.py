"""The dashboard in headless Chromium (Playwright driving Debian's /usr/bin/chromium): it loads,
shows the providers, follows a job through its states live (each job once in the feed),
labels chain time, names the wallet that paid for an API-key job, says when a job does not
exist, explains how to use a devnet account without a wallet, and submits a job signed by an
injected EIP-1193 wallet (``window.ethereum`` whose ``eth_signTypedData_v4`` calls back into
Python, which signs with eth_account). The API docs render with no network but the gateway.
Screenshots go to the test's tmp_path (docs/dashboard.png is refreshed by hand, not by tests)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_utils import keccak
from gateway_stack import USD, Stack, deliver, grant, sign_typed, upload

from contracts.types import Receipt, gpu_class_bytes

CHROMIUM = "/usr/bin/chromium"
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
    yield from _page(browser, stack, wallet=True)


def _page(browser: Any, stack: Stack, wallet: bool) -> Iterator[Any]:
    signed: list[dict[str, Any]] = []

    def sign(address: str, typed_json: str) -> str:
        assert address.lower() == stack.address(WALLET).lower()
        typed = json.loads(typed_json)
        signed.append(typed)
        return sign_typed(stack.key(WALLET), typed)

    ctx = browser.new_context(viewport={"width": 1360, "height": 860})
    pg = ctx.new_page()
    pg.signed = signed
    if wallet:
        pg.expose_function("hearthTestSign", sign)
        pg.add_init_script(INJECTED_WALLET % {"address": stack.address(WALLET), "chain_id": stack.hearth.chain_id})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    failed: list[tuple[int, str]] = []
    pg.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    pg.failed = failed
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
    page.wait_for_load_state("networkidle")
    assert page.failed == [], "every request of the page succeeds, the favicon included"
    assert page.evaluate("fetch('/favicon.ico').then((r) => r.status)") == 200


def test_the_job_page_follows_a_job_through_its_states_live(page: Any, stack: Stack) -> None:
    stack.approve("client")
    posted = stack.post_job(texts=["watch me move"])
    job_id = posted["job_id"]
    stack.wait_indexed(posted["block_number"])
    page.goto(f"{stack.base_url}/#/jobs/{job_id}")
    status = page.locator("#job-status")
    page.wait_for_selector('#job-status[data-status="posted"]', timeout=15_000)

    h, key = stack.hearth, stack.key(PROVIDER)
    h.claim(key, job_id)
    page.wait_for_selector('#job-status[data-status="claimed"]', timeout=15_000)
    output = os.urandom(1536)
    assert upload(stack, output, PROVIDER).status_code == 201
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
    # The live feed on the same page saw the transitions: the job is listed once, at its latest
    # state, and the list runs newest block first; the panel says so.
    page.wait_for_selector(f'#feed li[data-job="{job_id}"][data-status="delivered"]', state="attached",
                           timeout=15_000)
    assert page.locator(f'#feed li[data-job="{job_id}"]').count() == 1
    assert page.locator(f'#feed-mini li[data-job="{job_id}"]').count() == 1
    blocks = [int(b) for b in page.eval_on_selector_all("#feed li", "els => els.map((e) => e.dataset.block)")]
    assert blocks == sorted(blocks, reverse=True) and len(set(
        page.eval_on_selector_all("#feed li", "els => els.map((e) => e.dataset.job)"))) == len(blocks)
    assert page.locator("#feed li").first.get_attribute("data-job") == str(job_id)
    assert "latest state" in page.locator("#feed-help").inner_text()


def test_the_submit_page_signs_with_the_wallet_and_the_job_appears(page: Any, stack: Stack, tmp_path: Path) -> None:
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
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_times_are_labelled_chain_time_and_the_header_says_how_far_it_is_from_the_wall_clock(
    page: Any, stack: Stack,
) -> None:
    # As the README's walkthrough does, the chain clock runs ten minutes ahead. Earlier tests may
    # have reverted it behind the wall clock (or moved it further ahead): pin it where possible.
    target = int(time.time()) + 601
    if stack.chain.timestamp() < target:
        stack.chain.rpc("evm_setNextBlockTimestamp", [target])
        stack.chain.mine()
    else:
        stack.chain.advance(601)
    stack.approve("client")
    posted = stack.post_job(texts=["what time is it"])
    stack.wait_indexed(posted["block_number"])
    page.goto(f"{stack.base_url}/#/jobs/{posted['job_id']}")
    page.wait_for_selector('#job-status[data-status="posted"]', timeout=15_000)
    page.wait_for_selector("#chain-clock[data-offset]", timeout=15_000)
    offset = int(page.get_attribute("#chain-clock", "data-offset"))
    expected = stack.chain.timestamp() - time.time()
    assert expected >= 500 and abs(offset - expected) <= 60, (offset, expected)
    clock = page.locator("#chain-clock").inner_text()
    shown = f"{int(offset / 60 + 0.5)} min" if offset < 5400 else f"{offset / 3600:.1f} h"  # as app.js rounds
    assert "chain time" in clock and f"{shown} ahead of wall clock" in clock, clock
    stamp = page.locator("#job-timeline li time.chain-time").first
    assert "(chain)" in stamp.inner_text() and "chain time" in (stamp.get_attribute("title") or "")
    assert int(stamp.get_attribute("data-chain-time")) == stack.http.get(
        f"/v1/jobs/{posted['job_id']}").json()["history"][0]["at"]
    # The overview's rates are measured on the same clock, and say so.
    page.evaluate("location.hash = '#/'")
    page.wait_for_function("document.querySelectorAll('#stats .card').length === 6")
    for label in ("Jobs / min", "Median latency"):
        card = page.locator("#stats .card", has_text=label)
        assert "(chain time)" in card.inner_text() and "chain time" in (card.get_attribute("title") or "")


def test_a_job_paid_through_an_api_key_shows_the_wallet_that_paid(page: Any, stack: Stack) -> None:
    import threading

    import httpx

    wallet, relayer = stack.address("client"), stack.address("relayer")
    stack.approve("client", 1 * USD, spender=relayer)
    api_key, body = grant(stack, "client", cap=1 * USD)
    assert stack.http.post("/v1/api-keys", json=body).status_code == 201
    before = stack.hearth.market.functions.jobCount().call()
    answers: list[httpx.Response] = []

    def call() -> None:  # waits for a delivery, which this test makes by hand below
        with httpx.Client(base_url=stack.base_url, timeout=120) as c:
            answers.append(c.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "who paid?"},
                                  headers={"authorization": f"Bearer {api_key}"}))

    t = threading.Thread(target=call, daemon=True)
    t.start()
    for _ in range(300):
        if stack.hearth.market.functions.jobCount().call() > before:
            break
        time.sleep(0.05)
    job_id = before + 1
    for _ in range(300):  # indexed, and the gateway has booked the charge against it
        if stack.http.get(f"/v1/jobs/{job_id}").json().get("paid_by"):
            break
        time.sleep(0.05)
    page.goto(f"{stack.base_url}/#/jobs/{job_id}")
    page.wait_for_selector('#job-status[data-status="posted"]', timeout=15_000)
    assert page.get_attribute("#job-meta", "data-payer") == wallet
    meta = page.locator("#job-meta").inner_text()
    assert "Paid by" in meta and wallet in meta and f"{relayer} (this gateway's relayer" in meta

    deliver(stack, job_id, np.zeros((1, 384), dtype="<f4").tobytes())
    # The live update that moves the page to "delivered" names the payer too.
    page.wait_for_selector('#job-status[data-status="delivered"]', timeout=15_000)
    assert page.get_attribute("#job-meta", "data-payer") == wallet
    assert "Paid by" in page.locator("#job-meta").inner_text()
    t.join(60)
    assert answers and answers[0].status_code == 200, answers

    # So does the jobs table: the paying wallet in the Client column, the relayer in its tooltip.
    page.evaluate("location.hash = '#/jobs'")
    cell = page.locator(f'#jobs tr[data-job="{job_id}"] td').nth(2)
    cell.wait_for(timeout=15_000)
    assert cell.inner_text() == f"{wallet[:6]}…{wallet[-4:]}"
    assert wallet in (cell.get_attribute("title") or "") and relayer in (cell.get_attribute("title") or "")


def test_a_job_that_does_not_exist_says_so(page: Any, stack: Stack) -> None:
    count = stack.hearth.market.functions.jobCount().call()
    page.goto(f"{stack.base_url}/#/jobs/9999")
    page.wait_for_selector('#job-status[data-status="job_not_found"]', timeout=15_000)
    assert page.locator("#job-status").inner_text() == "does not exist"
    missing = page.locator("#job-missing")
    assert missing.is_visible() and f"job 9999 does not exist: the market has {count} jobs" in missing.inner_text()
    assert "not indexed" not in page.locator("#view-job").inner_text()


def test_job_ids_outside_the_markets_numbering_do_not_exist_and_are_not_asked_for(page: Any, stack: Stack) -> None:
    # Job ids run from 1; the gateway takes them up to 2^63-1 (and answers 422 past that).
    for job_id in ("0", "99999999999999999999"):
        page.goto(f"{stack.base_url}/#/jobs/{job_id}")
        page.wait_for_function(f"document.querySelector('#job-missing').textContent.startsWith('job {job_id} ')")
        assert page.locator("#job-status").inner_text() == "does not exist"
        assert page.get_attribute("#job-status", "data-status") == "job_not_found"
        assert f"job {job_id} does not exist" in page.locator("#job-missing").inner_text()
    page.wait_for_load_state("networkidle")
    assert not [u for _, u in page.failed if "/v1/jobs/" in u], page.failed


def test_a_job_the_gateway_cannot_look_up_on_chain_is_not_said_to_be_missing(page: Any, stack: Stack) -> None:
    from gateway.app import error_body

    # What the gateway answers for a job missing from its index while the chain does not answer.
    body = error_body(404, "job_not_found", "no job 4242 in the index, and the chain cannot be asked now",
                      details={"job_id": 4242})
    page.route("**/v1/jobs/4242", lambda route: route.fulfill(status=404, json=body))
    page.goto(f"{stack.base_url}/#/jobs/4242")
    page.wait_for_selector('#job-status[data-status="job_unknown"]', timeout=15_000)
    assert page.locator("#job-status").inner_text() == "not found"
    assert "the chain cannot be asked now" in page.locator("#job-missing").inner_text()
    assert "does not exist" not in page.locator("#view-job").inner_text()


def test_without_a_wallet_the_submit_page_explains_how_to_use_a_devnet_account(browser: Any, stack: Stack) -> None:
    for pg in _page(browser, stack, wallet=False):
        pg.goto(stack.base_url + "/#/submit")
        pg.click("#connect")
        help_box = pg.locator("#wallet-help")
        help_box.wait_for(state="visible", timeout=10_000)
        text = help_box.inner_text()
        assert ".hearth/devnet-accounts.json" in text and "private key" in text
        assert "make up or make devnet" in text  # what writes the file (`hearth devnet` alone only prints help)
        assert stack.devnet.manifest.rpc_url in text and str(stack.hearth.chain_id) in text
        assert pg.locator("#submit").is_disabled()


DOC_PAGES = [("/docs", ".opblock-summary"), ("/redoc", "[data-section-id^='operation/']")]


@pytest.mark.parametrize(("path", "operation"), DOC_PAGES, ids=[p for p, _ in DOC_PAGES])
def test_the_api_docs_render_with_no_network_but_the_gateway_and_ask_nothing_of_anyone_else(
    browser: Any, stack: Stack, path: str, operation: str,
) -> None:
    ctx = browser.new_context()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(stack.base_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_local)
    errors: list[str] = []
    try:
        pg = ctx.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(stack.base_url + path)
        pg.wait_for_selector(operation, timeout=20_000)
        assert pg.locator(operation).count() >= 20
        assert any("/v1/embeddings" in t for t in pg.locator(operation).all_inner_texts())
        pg.wait_for_load_state("networkidle")
        assert outside == [], outside
        assert not errors, errors
    finally:
        ctx.close()
