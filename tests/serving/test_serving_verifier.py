"""The verifier duty on committed batches, end to end on the devnet with the serving stack: an
honest provider ("provider", eu) and a cheating one ("cheater", ap: a test launcher whose encoder
nudges every embedding). "verifier" samples and challenges (its duty in this process); the leaf
committees are drawn from the other two staked providers, "verifier2" (its duty in this
process) and "provider" (the duty inside its endpoint process, ``HEARTH_SERVING_VERIFY=1``,
sampling nothing). The cheater's committed leaves are caught, challenged with their Merkle
proofs, convicted by the committee and slashed; the challenger is paid; the honest provider's
batches are checked and never challenged; a restarted verifier neither re-challenges nor loses
its place. A provider that publishes nothing has its sampled leaf demanded and is slashed."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_stack import ServingStack, api_key, serving_stack  # noqa: E402

HST = 10**18
CHEAT = str(Path(__file__).resolve().parent / "cheating_provider.py")
#: the honest endpoint also serves on committees (and samples nothing itself)
DUTY = {"HEARTH_SERVING_VERIFY": "1", "HEARTH_VERIFIER_SAMPLE_RATE_BPS": "0", "HEARTH_VERIFIER_MIN_SAMPLES": "0",
        "HEARTH_VERIFIER_POLL_S": "0.2"}
COLLECT = {"HEARTH_SERVING_COLLECT_THRESHOLD": "1"}
#: role -> (region, price per unit, extra environment); the cheater runs the test's launcher
PROVIDERS = {"provider": ("eu", 200, {**COLLECT, **DUTY}), "cheater": ("ap", 100, COLLECT)}
VERIFIERS = ("verifier", "verifier2")


@pytest.fixture(scope="module")
def stack(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    with serving_stack(devnet, chain, tmp_path_factory.mktemp("verifier"), PROVIDERS,
                       argv={"cheater": [sys.executable, CHEAT]}) as st:
        yield st


class Miner(threading.Thread):
    """A block every ``every`` seconds (Anvil mines only on transactions here): the sampling
    block and the draw block come as they would on a live chain."""

    def __init__(self, chain: Any, every: float = 0.25) -> None:
        super().__init__(daemon=True, name="test-miner")
        self.chain, self.every, self.stop = chain, every, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.chain.mine()
            except Exception:  # noqa: BLE001, S112 - a blink of the RPC; the next block comes
                continue


def embed(st: ServingStack, key: str, text: str, region: str) -> str:
    r = st.http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [text]},
                     headers={"authorization": f"Bearer {key}", "x-hearth-region": region})
    assert r.status_code == 200, r.text
    return str(r.json()["hearth"]["provider"])


def wait(cond: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def leaf_disputes_driven(verifier: Any, s: Any, chain: Any, keys: set[tuple[int, int]], members: set[str],
                         *, members_seated: bool = False) -> bool:
    """True once every leaf dispute in ``keys`` is settled; meanwhile, when every open dispute's
    current phase has all of ``members``' votes in, moves the chain's clock to the earliest phase
    end (the duties draw, vote and resolve; this only stands in for the passing of time). With
    ``members_seated``, every committee must hold one of ``members``."""
    from contracts.types import Phase

    w3 = s.batches.w3
    now = chain.timestamp()
    targets = []
    for bid, idx in keys:
        d = verifier.dispute_view(bid, idx)
        phase = Phase(int(d["phase"]))
        if phase == Phase.SETTLED:
            continue
        if phase != Phase.VOTING:
            return False  # awaiting its draw (or resolution): the duties act
        seats = {a.lower() for a in s.batches.functions.leafCommittee(bid, idx).call()} & members
        assert seats or not members_seated, "the committee is drawn from our members"
        info = [s.batches.functions.leafMember(bid, idx, w3.to_checksum_address(a)).call() for a in seats]
        if now < int(d["commitEnd"]):
            if not all(m[1] for m in info):
                return False
            targets.append(int(d["commitEnd"]))
        elif now < int(d["revealEnd"]):
            if not all(m[2] for m in info):
                return False
            targets.append(int(d["revealEnd"]))
        else:
            return False  # to be resolved
    if not targets:
        return True
    chain.advance(min(targets) - now)
    return False


def provider_status(st: ServingStack, role: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    """``hearth provider status ADDRESS --json [ARGS]`` against the stack's chain."""
    from typer.testing import CliRunner

    from deploy.cli import app

    monkeypatch.setenv("HEARTH_DATA_DIR", str(st.tmp))
    monkeypatch.setenv("HEARTH_MANIFEST", str(st.tmp / "manifest.json"))
    r = CliRunner().invoke(app, ["provider", "status", st.address(role), "--json", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.stdout))


def test_a_cheating_provider_is_caught_on_a_committed_batch_and_slashed_and_an_honest_one_is_not(
    stack: ServingStack, chain: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from contracts.settlement import Settlement
    from worker.node.compute import shared_encoder
    from worker.serving.verifier import VerifierSettings, build

    st = stack
    h = st.hearth
    start = h.w3.eth.block_number
    key = api_key(st, "client")
    served = [embed(st, key, f"an honest sentence {i}", "eu") for i in range(3)]
    cheated = [embed(st, key, f"a cheated sentence {i}", "ap") for i in range(2)]
    assert set(served) == {st.address("provider")} and set(cheated) == {st.address("cheater")}
    for role in PROVIDERS:
        wait(lambda r=role: st.providers[r].status()["batches_open"] == 0
             and st.providers[r].status()["batches_committed"] > 0, 30, f"{role}'s batches committed")
    cheater_batches = set(st.providers["cheater"].status()["batch_ids"])
    honest_batches = set(st.providers["provider"].status()["batch_ids"])

    s = Settlement(h)
    enc = shared_encoder()
    staking = h.staking.functions
    stake0 = int(staking.getProvider(st.address("cheater")).call()[0])
    hst0 = int(h.hst.functions.balanceOf(st.address("verifier")).call())

    def settings(role: str) -> VerifierSettings:
        # "verifier" checks every leaf; the other two only serve on committees.
        rate = 10_000 if role == "verifier" else 0
        return VerifierSettings(key=st.key(role), data_dir=st.tmp / f"duty-{role}", blob_url=st.base_url,
                                sample_rate_bps=rate, min_samples=1 if rate else 0,
                                manifest_path=st.tmp / "manifest.json")

    verifiers = {role: build(settings(role), encoder=enc, settlement=s) for role in VERIFIERS}
    for v in verifiers.values():
        v.log_chunk_blocks = 3  # events read 3 blocks per eth_getLogs: nothing is missed across chunks
    stop = threading.Event()
    miner = Miner(chain)
    miner.start()
    threads = [v.start(stop, 0.2) for v in verifiers.values()]
    try:
        # Caught: every cheated leaf is challenged by the sampler, none of the honest ones.
        ev = s.batches.events
        challenged = wait(lambda: len(ev.LeafChallenged().get_logs(from_block=0)) >= len(cheated)
                          and ev.LeafChallenged().get_logs(from_block=0), 60, "the cheated leaves challenged")
        keys = {(int(lg["args"]["batchId"]), int(lg["args"]["index"])) for lg in challenged}
        assert {bid for bid, _ in keys} <= cheater_batches
        assert all(str(lg["args"]["challenger"]) == st.address("verifier") for lg in challenged)

        # The committee votes; the chain's clock is moved past each phase once its votes are in.
        members = {st.address(r).lower() for r in ("verifier2", "provider")}


        wait(lambda: leaf_disputes_driven(verifiers["verifier"], s, chain, keys, members), 90,
             "the leaf disputes resolved")
        frauds = ev.LeafFraudProven().get_logs(from_block=0)
        assert {(int(lg["args"]["batchId"]), int(lg["args"]["index"])) for lg in frauds} == keys
        assert not ev.LeafUpheld().get_logs(from_block=0)
        slashed = sum(int(lg["args"]["slashed"]) for lg in frauds)
        reward = sum(int(lg["args"]["challengerReward"]) for lg in frauds)
        assert slashed == len(keys) * s.params().leaf_slash and reward > 0
        info = staking.getProvider(st.address("cheater")).call()
        assert int(info[0]) == stake0 - slashed  # slashed on chain
        assert int(info[4]) > chain.timestamp()  # and jailed
        # The challenger withdraws its share of the slash.
        wait(lambda: int(h.hst.functions.balanceOf(st.address("verifier")).call()) >= hst0 + reward, 30,
             "the challenger's reward withdrawn")

        # The honest provider's batches were sampled, re-executed and matched: never challenged.
        checked = [lf for lf in verifiers["verifier"].leaves() if lf[0] in honest_batches]
        assert len(checked) == len(served) and {lf[3] for lf in checked} == {"match"}
        assert not [lg for lg in ev.LeafChallenged().get_logs(from_block=0)
                    if int(lg["args"]["batchId"]) in honest_batches]
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        miner.stop.set()
        miner.join(10)
    # Restarted on the same state file: nothing is challenged again, nothing is sampled again.
    for v in verifiers.values():
        v.close()
    again = build(settings("verifier"), encoder=enc, settlement=s)
    try:
        rep = again.tick()
        assert rep.challenged == [] and rep.sampled == []
        assert len(s.batches.events.LeafChallenged().get_logs(from_block=0)) == len(keys)
        assert {d["outcome"] for d in again.summary()["disputes"]} == {"fraud"}
    finally:
        again.close()

    # `hearth provider status`: the cheater's challenges all proven fraudulent and slashed, and the
    # capacity its endpoint reports on its reduced stake; the honest provider's record is clean.
    staked = int(staking.getProvider(st.address("cheater")).call()[0])
    assert staked == stake0 - slashed
    per_stake = int(st.providers["cheater"].status()["capacity"]["per_stake_token"])
    chain.mine()
    wait(lambda: st.providers["cheater"].status()["capacity"]["bound"] == str(staked * per_stake // HST), 30,
         "the cheater's endpoint to read its stake after the slash")
    got = provider_status(st, "cheater", monkeypatch)
    leaves = got["serving_challenges"]
    assert (leaves["total"], leaves["fraud"], leaves["disputed"]) == (len(keys), len(keys), 0)
    assert {(c["batch_id"], c["index"]) for c in leaves["leaves"]} == keys
    assert all(c["challenger"] == st.address("verifier") and not c["withheld"] for c in leaves["leaves"])
    assert got["slashes"]["total"] == len(keys) and got["slashes"]["amount"] == str(slashed)
    endpoint = got["endpoint_status"]
    assert endpoint["requests_served"] == len(cheated)
    cap = endpoint["capacity"]
    assert cap["bound"] == str(staked * per_stake // HST)
    assert int(cap["left"]) == max(0, int(cap["bound"]) - int(cap["exposure"]))
    challenger = provider_status(st, "verifier", monkeypatch, "--from-block", str(start))
    assert challenger["from_block"] == start and challenger["earnings"]["rewards_withdrawn"] == str(reward)
    honest = provider_status(st, "provider", monkeypatch)
    assert honest["serving_challenges"]["total"] == 0 and honest["slashes"]["total"] == 0
    assert honest["endpoint_status"]["requests_served"] == len(served)


def test_a_provider_that_withholds_a_sampled_leaf_is_demanded_and_slashed(stack: ServingStack, chain: Any) -> None:
    """A provider ("client2", staked here, no endpoint) commits a batch and publishes nothing: the
    verifier demands the sampled leaf on-chain ``demand_after_s`` after the commit and, with no
    reveal before the deadline, settles it as withheld (fraud: slashed and jailed)."""
    import secrets

    from contracts.settlement import Settlement, WorkReceipt
    from contracts.types import gpu_class_bytes
    from deploy.devnet import fund, stake_provider
    from worker.node.compute import shared_encoder
    from worker.serving.verifier import VerifierSettings, build

    st, h = stack, stack.hearth
    s = Settlement(h)
    model = bytes.fromhex(st.model_id[2:])
    fund(h, st.key("deployer"), st.address("client2"), hst=1_000 * HST)
    stake_provider(h, st.key("client2"), 500 * HST, [model])
    enc = shared_encoder()
    receipts = [WorkReceipt(secrets.token_bytes(32), st.address("client"), model, secrets.token_bytes(32),
                            secrets.token_bytes(32), 5, 500, enc.runtime_hash(), gpu_class_bytes("cpu"))]
    batch_id, _, _ = s.commit(st.key("client2"), s.work_batch(receipts))
    stake0 = int(h.staking.functions.getProvider(st.address("client2")).call()[0])
    v = build(VerifierSettings(key=st.key("verifier"), data_dir=st.tmp / "duty-withheld", blob_url=st.base_url,
                               sample_rate_bps=10_000, demand_after_s=60, manifest_path=st.tmp / "manifest.json"),
              encoder=enc, settlement=s)
    v.log_chunk_blocks = 2
    ev = s.batches.events
    try:
        chain.mine()
        v.tick()
        assert (batch_id, 0) in {(b, i) for b, i, _, _ in v.leaves()}
        assert not ev.LeafDemanded().get_logs(from_block=0)  # not yet: the provider may still publish
        chain.advance(61)
        v.tick()
        demanded = ev.LeafDemanded().get_logs(from_block=0)
        assert [(int(lg["args"]["batchId"]), int(lg["args"]["index"])) for lg in demanded] == [(batch_id, 0)]
        chain.advance(int(s.params().reveal_window))
        v.tick()
        fraud = [lg["args"] for lg in ev.LeafFraudProven().get_logs(from_block=0)
                 if int(lg["args"]["batchId"]) == batch_id]
        assert len(fraud) == 1 and fraud[0]["withheld"] is True
        assert int(fraud[0]["slashed"]) == s.params().leaf_slash
        assert int(h.staking.functions.getProvider(st.address("client2")).call()[0]) == stake0 - s.params().leaf_slash
        v.tick()
        assert v.tick().resolved == []  # settled once
    finally:
        v.close()
