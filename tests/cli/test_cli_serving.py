"""``hearth provider join`` and ``hearth provider status`` on the session devnet: joining writes
the endpoint, region and price on-chain (what gateways route by); bad input is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from common import accounts as accts
from deploy.cli import app

runner = CliRunner()


@pytest.fixture
def cli_env(fresh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HEARTH_MANIFEST", raising=False)
    fresh.manifest.save(tmp_path / "manifest.json")
    accts.save(fresh.accounts, tmp_path / "devnet-accounts.json")
    return fresh


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args), catch_exceptions=False)
    return r.exit_code, " ".join(r.output.split())


def test_joining_writes_the_endpoint_region_and_price_that_gateways_route_by(cli_env: Any) -> None:
    h = cli_env.hearth
    me = cli_env.accounts["verifier2"].address
    code, out = run("provider", "join", "--endpoint", "http://127.0.0.1:8101", "--region", "eu", "--price", "150",
                    "--as", "verifier2")
    assert code == 0, out
    p = h.staking.functions.getProvider(me).call()
    assert (p[6], p[7]) == ("http://127.0.0.1:8101", "eu")
    model = bytes.fromhex(cli_env.manifest.models[0].model_id[2:])
    assert h.settlement.functions.priceOf(me, model).call() == 150
    code, out = run("provider", "status", "--as", "verifier2")
    assert code == 0, out
    assert "active" in out and "price 150 per unit" in out and "endpoint not answering" in out


def test_joining_with_an_endpoint_no_gateway_can_reach_is_one_line_and_changes_nothing(cli_env: Any) -> None:
    h = cli_env.hearth
    me = cli_env.accounts["verifier2"].address
    before = h.staking.functions.getProvider(me).call()
    code, out = run("provider", "join", "--endpoint", "http://127.0.0.1:0", "--price", "150", "--as", "verifier2")
    assert code == 1
    assert out.startswith("error: not an endpoint gateways can reach")
    assert h.staking.functions.getProvider(me).call() == before
    code, out = run("provider", "join", "--endpoint", "http://127.0.0.1:8101", "--price", "999999",
                    "--as", "verifier2")
    assert code == 1 and out.startswith("error: price 999999 is above the model's ceiling")
    assert h.staking.functions.getProvider(me).call() == before


USD = 10**6
HST = 10**18


class Record:
    """Settlement and job-market actions on the session devnet, by role, for a provider's record."""

    def __init__(self, dn: Any, chain: Any) -> None:
        from contracts.settlement import Settlement

        self.dn, self.h, self.chain = dn, dn.hearth, chain
        self.s = Settlement(self.h)
        self.model = bytes.fromhex(dn.manifest.models[0].model_id[2:])
        self.runtime = bytes.fromhex(dn.manifest.models[0].runtime_hash[2:])
        self.n = 0

    def key(self, role: str) -> str:
        return str(self.dn.accounts[role].key)

    def addr(self, role: str) -> str:
        return str(self.dn.accounts[role].address)

    def send(self, role: str, fn: Any) -> Any:
        return self.h.sender(self.key(role)).send(fn)

    def commit(self, provider: str, leaves: int) -> tuple[int, Any, Any]:
        from eth_utils import keccak

        from contracts.settlement import WorkReceipt

        receipts = []
        for _ in range(leaves):
            self.n += 1
            receipts.append(WorkReceipt(keccak(text=f"status request {self.n}"), self.addr("client"), self.model,
                                        keccak(text=f"in {self.n}"), keccak(text=f"out {self.n}"), 10, 1000,
                                        self.runtime, b"cpu".ljust(32, b"\x00")))
        wb = self.s.work_batch(receipts)
        batch_id, batch, _ = self.s.commit(self.key(provider), wb)
        return batch_id, batch, wb

    def bond(self, role: str) -> None:
        self.send(role, self.h.usd.functions.approve(self.s.batches.address, 10 * USD))

    def collect(self, payer: str, provider: str, cumulative: int) -> None:
        from contracts.settlement import Voucher

        v = Voucher(self.addr(payer), self.addr(provider), cumulative, self.chain.timestamp())
        self.s.collect(self.key(provider), [self.s.sign_voucher(self.key(payer), v)])

    def delivered_job(self, provider: str, units: int) -> int:
        import secrets

        from contracts.types import Receipt, gpu_class_bytes

        self.h.approve_usd(self.key("client"), 10**12)
        job_id, _ = self.h.post_job(self.key("client"), self.model, secrets.token_bytes(32), 10_000,
                                    self.chain.timestamp() + 86_400)
        self.h.claim(self.key(provider), job_id)
        r = Receipt(job_id, b"\x02" * 32, units, self.model, self.runtime, gpu_class_bytes("cpu"))
        self.h.submit_receipt(self.key(provider), r, self.h.sign_receipt(self.key(provider), r))
        return job_id


def test_status_counts_the_providers_challenges_by_outcome_its_slashes_and_its_earnings(
    cli_env: Any, chain: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Of "provider": one leaf demanded and revealed, one demanded and withheld (fraud: slashed),
    one challenged and upheld by default, one challenged and still open; one job challenged and
    resolved neutrally, one finalized and withdrawn; two voucher collections. Another provider's
    challenged leaf and job are not counted."""
    import json

    from contracts import provider_record
    from contracts.provider_record import read_provider_record

    x, h = Record(cli_env, chain), cli_env.hearth
    me = x.addr("provider")
    # The per-job path: one job paid and withdrawn, one challenged (and another provider's).
    paid = x.delivered_job("provider", 50)
    challenged = x.delivered_job("provider", 60)
    other_job = x.delivered_job("verifier2", 70)
    h.approve_usd(x.key("verifier"), 10**12)
    h.challenge(x.key("verifier"), challenged)
    h.challenge(x.key("verifier"), other_job)
    # The serving plane: two batches, a lane, two collections.
    a_id, a, a_wb = x.commit("provider", 3)
    b_id, b, b_wb = x.commit("provider", 1)
    other_id, other, other_wb = x.commit("verifier2", 1)
    x.s.approve(x.key("client"), 5 * USD)
    x.send("client", x.s.escrow.functions.depositAndAllocate([me], [5 * USD]))
    x.collect("client", "provider", 2 * USD)
    x.collect("client", "provider", 3 * USD)
    for role in ("verifier", "verifier2"):
        x.bond(role)
    x.s.demand_leaf(x.key("verifier2"), a_id, a, 0)
    x.s.reveal_leaf(x.key("provider"), a_id, a, 0, a_wb.receipts[0], a_wb.proof(0))
    x.s.demand_leaf(x.key("verifier2"), a_id, a, 1)
    x.s.challenge_leaf(x.key("verifier"), a_id, a, 2, a_wb.receipts[2], a_wb.proof(2))
    x.s.challenge_leaf(x.key("verifier"), b_id, b, 0, b_wb.receipts[0], b_wb.proof(0))
    x.s.demand_leaf(x.key("verifier"), other_id, other, 0)
    # No committee is drawn in time: the leaf dispute and the job's end with the neutral default.
    chain.mine(260)
    x.send("relayer", x.s.batches.functions.resolveLeafDispute(a_id, a.as_tuple(), 2))
    h.resolve_dispute(x.key("relayer"), challenged)
    chain.advance(601)
    h.finalize(x.key("relayer"), paid)
    credit = int(h.market.functions.balanceOf(me).call())
    h.withdraw(x.key("provider"))
    chain.advance(int(x.s.params().reveal_window))
    x.s.settle_withheld(x.key("relayer"), a_id, a, 1)
    leaf_slash = x.s.params().leaf_slash

    code, _ = run("provider", "status", "--as", "provider")
    assert code == 0
    r = runner.invoke(app, ["provider", "status", me, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["endpoint_status"] is None and got["jailed_until"] > chain.timestamp()
    leaves = got["serving_challenges"]
    assert {k: leaves[k] for k in ("total", "demanded", "revealed", "disputed", "upheld", "fraud")} == {
        "total": 4, "demanded": 0, "revealed": 1, "disputed": 1, "upheld": 1, "fraud": 1}
    assert [(c["batch_id"], c["index"], c["status"], c["challenger"], c["slashed"]) for c in leaves["leaves"]] == [
        (a_id, 0, "revealed", x.addr("verifier2"), "0"), (a_id, 1, "fraud", x.addr("verifier2"), str(leaf_slash)),
        (a_id, 2, "upheld", x.addr("verifier"), "0"), (b_id, 0, "disputed", x.addr("verifier"), "0")]
    assert leaves["leaves"][1]["withheld"] is True and leaves["leaves"][2]["by_default"] is True
    jobs = got["job_challenges"]
    assert (jobs["total"], jobs["neutral"], jobs["pending"]) == (1, 1, 0)
    assert [(j["job_id"], j["outcome"], j["challenger"]) for j in jobs["jobs"]] == [
        (challenged, "neutral", x.addr("verifier"))]
    assert got["slashes"]["total"] == 1 and got["slashes"]["amount"] == str(leaf_slash)
    assert got["slashes"]["events"][0]["recipient"] == x.s.batches.address
    assert credit == 50 * 100 - 50 * 100 * 500 // 10_000  # the job's payment less the market's fee
    assert got["earnings"] == {"collected": str(3 * USD), "collections": 2, "withdrawn_market": str(credit),
                               "withdrawn_settlement": "0", "rewards_withdrawn": "0"}

    code, out = run("provider", "status", me)
    assert code == 0, out
    assert "endpoint not answering" in out
    assert f"jailed until {got['jailed_until']}" in out
    assert "serving-plane challenges 4: 1 revealed, 1 disputed, 1 upheld, 1 fraud (1 still open)" in out
    assert f"batch {a_id} leaf 1: fraud (withheld), slashed 50.000000 HST" in out
    assert "per-job challenges 1: 1 neutral" in out
    assert "slashes 1: 50.000000 HST in all" in out
    assert "collected 3.000000 hUSD from the escrow in 2 collections; withdrew 0.004750 hUSD from the job market" in out

    # Read in small ranges and one value per topic filter: the same record.
    whole = read_provider_record(h, me)
    monkeypatch.setattr(provider_record, "TOPIC_VALUES_MAX", 1)
    assert read_provider_record(h, me, span=50) == whole
    assert whole.to_block - whole.from_block > 300
