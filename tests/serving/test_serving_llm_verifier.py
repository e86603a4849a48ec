"""The verifier duty on generation leaves, end to end on the devnet with the serving stack: an
honest provider ("provider", eu: MiniLM and SmolLM2) and one that serves a different model under
SmolLM2's registered id ("cheater", ap: a test launcher that runs SmolLM2 with its last 10 layers
cut off). "verifier" samples every leaf and re-executes each generation leaf as one
teacher-forced prefill of prompt + claimed output (SmolLM2 loaded lazily, at the first one); the
leaf committees are drawn from the other two providers staked on SmolLM2, "verifier2" (its duty
in this process) and "provider" (the duty inside its endpoint, on the endpoint's own weights).
The cheater's committed leaves are caught, convicted by the committee and slashed; the honest
provider's are matched and never challenged. Generations are 5 tokens (SmolLM2 decodes on one
CPU thread here)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_stack import ServingStack, api_key, serving_stack  # noqa: E402
from test_serving_verifier import Miner, leaf_disputes_driven, wait  # noqa: E402

LLM = "SmolLM2-135M-Instruct"
CHEAT = str(Path(__file__).resolve().parent / "cheating_llm_provider.py")
COLLECT = {"HEARTH_SERVING_COLLECT_THRESHOLD": "1", "HEARTH_SERVING_LLM_KV_PAGES": "32",
           "HEARTH_SERVING_LLM_PRICE": "300"}
#: the honest endpoint also serves on committees (and samples nothing itself)
DUTY = {"HEARTH_SERVING_VERIFY": "1", "HEARTH_VERIFIER_SAMPLE_RATE_BPS": "0", "HEARTH_VERIFIER_MIN_SAMPLES": "0",
        "HEARTH_VERIFIER_POLL_S": "0.2"}
PROVIDERS = {"provider": ("eu", 200, {**COLLECT, **DUTY, "HEARTH_SERVING_MODELS": f"all-MiniLM-L6-v2,{LLM}"}),
             "cheater": ("ap", 200, {**COLLECT, "HEARTH_SERVING_MODELS": LLM})}
VERIFIERS = ("verifier", "verifier2")
#: (prompt, temperature, seed): greedy and seeded sampling; short text completions (no chat
#: template), since every re-execution is a prefill of prompt + output on a CPU
REQUESTS = [("1, 2, 3,", 0.0, 1), ("The sky is", 0.8, 7)]


@pytest.fixture(scope="module")
def stack(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    with serving_stack(devnet, chain, tmp_path_factory.mktemp("llmverifier"), PROVIDERS, model_index=1,
                       argv={"cheater": [sys.executable, CHEAT]}) as st:
        yield st


def complete(st: ServingStack, key: str, content: str, temperature: float, seed: int, region: str) -> dict[str, Any]:
    r = st.http.post("/v1/completions", json={
        "model": LLM, "prompt": content, "max_tokens": 5,
        "temperature": temperature, "seed": seed,
    }, headers={"authorization": f"Bearer {key}", "x-hearth-region": region}, timeout=120)
    assert r.status_code == 200, r.text
    return dict(r.json()["hearth"])


def test_a_provider_serving_another_model_under_smollm2s_id_is_caught_and_slashed_and_an_honest_one_is_not(
    stack: ServingStack, chain: Any,
) -> None:
    from contracts.settlement import Settlement
    from worker.node.compute import shared_encoder
    from worker.serving.verifier import VerifierSettings, build

    st, h = stack, stack.hearth
    llm_id = bytes.fromhex(st.devnet.manifest.models[1].model_id[2:])
    key = api_key(st, "client")
    start = int(h.w3.eth.block_number)
    def ask(region: str) -> list[dict[str, Any]]:
        return [complete(st, key, c, t, seed, region) for c, t, seed in REQUESTS]

    with ThreadPoolExecutor(2) as pool:  # the two endpoints decode at once
        honest, cheated = pool.map(ask, ("eu", "ap"))
    assert {a["provider"] for a in honest} == {st.address("provider")}
    assert {a["provider"] for a in cheated} == {st.address("cheater")}
    # Same prompts, same seeds: the truncated model answers otherwise, under the same model id.
    assert all(a["output_ids"] != b["output_ids"] for a, b in zip(honest, cheated, strict=True))
    s = Settlement(h)

    def batches_of(role: str) -> dict[int, int]:
        """batch id -> leaves of ``role``'s batches committed in this test."""
        return {int(lg["args"]["batchId"]): int(lg["args"]["count"])
                for lg in s.batches.events.BatchCommitted().get_logs(from_block=start)
                if lg["args"]["provider"] == st.address(role)}

    for role, n in (("provider", len(honest)), ("cheater", len(cheated))):
        wait(lambda r=role, n=n: sum(batches_of(r).values()) == n, 30, f"{role}'s leaves committed")
    cheater_batches, honest_batches = set(batches_of("cheater")), set(batches_of("provider"))
    # The committee pool of (SmolLM2, cpu): the two endpoints, and the two verifiers staked on it here.
    for role in VERIFIERS:
        h.sender(st.key(role)).send(h.staking.functions.setServing(llm_id, True))
    staking = h.staking.functions
    stake0 = int(staking.getProvider(st.address("cheater")).call()[0])

    def settings(role: str) -> VerifierSettings:
        rate = 10_000 if role == "verifier" else 0
        return VerifierSettings(key=st.key(role), data_dir=st.tmp / f"duty-{role}", blob_url=st.base_url,
                                sample_rate_bps=rate, min_samples=1 if rate else 0,
                                manifest_path=st.tmp / "manifest.json")

    enc = shared_encoder()
    verifiers = {role: build(settings(role), encoder=enc, settlement=s) for role in VERIFIERS}
    assert not verifiers["verifier"].checkers[llm_id].loaded  # SmolLM2 waits for a generation leaf
    stop = threading.Event()
    miner = Miner(chain)
    miner.start()
    threads = [v.start(stop, 0.2) for v in verifiers.values()]
    ev = s.batches.events
    try:
        challenged = wait(lambda: len(ev.LeafChallenged().get_logs(from_block=0)) >= len(cheated)
                          and ev.LeafChallenged().get_logs(from_block=0), 120, "the cheated leaves challenged")
        keys = {(int(lg["args"]["batchId"]), int(lg["args"]["index"])) for lg in challenged}
        assert len(keys) == len(cheated) and {bid for bid, _ in keys} <= cheater_batches
        assert all(str(lg["args"]["challenger"]) == st.address("verifier") for lg in challenged)
        members = {st.address(r).lower() for r in ("verifier2", "provider")}


        wait(lambda: leaf_disputes_driven(verifiers["verifier"], s, chain, keys, members, members_seated=True), 120,
             "the leaf disputes resolved")
        frauds = ev.LeafFraudProven().get_logs(from_block=0)
        assert {(int(lg["args"]["batchId"]), int(lg["args"]["index"])) for lg in frauds} == keys
        assert not ev.LeafUpheld().get_logs(from_block=0)
        slashed = sum(int(lg["args"]["slashed"]) for lg in frauds)
        assert slashed == len(keys) * s.params().leaf_slash
        assert int(staking.getProvider(st.address("cheater")).call()[0]) == stake0 - slashed

        # The honest provider's generation leaves were re-executed and matched: never challenged.
        checked = [lf for lf in verifiers["verifier"].leaves() if lf[0] in honest_batches]
        assert len(checked) == len(honest) and {lf[3] for lf in checked} == {"match"}
        assert not [lg for lg in ev.LeafChallenged().get_logs(from_block=0)
                    if int(lg["args"]["batchId"]) in honest_batches]
        assert verifiers["verifier"].checkers[llm_id].loaded
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        miner.stop.set()
        miner.join(10)
        for v in verifiers.values():
            v.close()
