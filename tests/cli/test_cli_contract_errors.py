"""Contract errors reach the user as sentences that name the job, its state and what to do,
from one table in ``contracts.errors``; an error missing from the table still reads with its
arguments' names, and a transaction that reverted on-chain says why."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak
from typer.testing import CliRunner

from common import accounts as accts
from contracts.chain import ErrorDecoder
from contracts.errors import ChainError, RevertContext, explain_revert
from deploy.cli import app

runner = CliRunner()
RAW = re.compile(r"\b[A-Z][A-Za-z]+\(\d")  # "WrongStatus(1, 3)" and the like


@pytest.fixture
def cli_env(fresh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HEARTH_MANIFEST", raising=False)
    fresh.manifest.save(tmp_path / "manifest.json")
    accts.save(fresh.accounts, tmp_path / "devnet-accounts.json")
    return fresh


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def post(role: str = "client") -> int:
    r = cli("job", "post", "--text", "hello hearth", "--approve", "--as", role)
    assert r.exit_code == 0, r.output
    return int(re.search(r"posted job (\d+)", r.output).group(1))  # type: ignore[union-attr]


def one_line_error(r: Any) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert not RAW.search(r.output), r.output
    return " ".join(r.output.split())


def test_finalizing_a_posted_job_names_the_job_its_state_and_what_to_do(cli_env: Any) -> None:
    job = post()
    out = one_line_error(cli("job", "finalize", str(job), "--as", "client"))
    assert f"job {job} is posted and waiting for a provider, so it cannot be finalized" in out
    assert "a staked provider can claim it" in out


def test_claiming_a_job_twice_says_it_is_claimed_already(cli_env: Any) -> None:
    job = post()
    assert cli("job", "claim", str(job), "--as", "provider").exit_code == 0
    out = one_line_error(cli("job", "claim", str(job), "--as", "verifier"))
    assert f"job {job} is claimed by a provider who has not delivered yet, so it cannot be claimed" in out


def test_withdrawing_with_no_credit_says_there_is_nothing_and_where_credit_comes_from(cli_env: Any) -> None:
    who = cli_env.accounts["client2"].address
    out = one_line_error(cli("withdraw", "--as", "client2"))
    assert f"{who} has no market credit to withdraw" in out and "finalized or refunded jobs" in out


def test_unbonding_more_than_the_free_stake_gives_both_amounts_in_tokens(cli_env: Any) -> None:
    out = one_line_error(cli("provider", "unbond", "100000", "--as", "provider"))
    assert "has 500 HST of free stake but the unbond asks for 100,000 HST" in out


def test_a_transaction_that_reverts_on_chain_is_replayed_for_its_reason(cli_env: Any) -> None:
    h = cli_env.hearth
    job = post()
    record = h.job(job)
    h.claim(cli_env.accounts["provider"].key, job, record)
    # What a race looks like: the check passed, then someone claimed first. Sending with a fixed
    # gas limit skips the estimate, so the transaction is mined and reverts.
    s = h.sender(cli_env.accounts["verifier"].key)
    with pytest.raises(ChainError) as caught:
        s.send(h.market.functions.claimJob(job, record.as_tuple()), gas=300_000)
    err = caught.value
    assert err.error_name in ("WrongStatus", "JobMismatch") and err.action == "claimJob"
    assert "was mined in block" in str(err) and "but reverted" in str(err) and f"job {job}" in str(err)


def test_a_transaction_that_runs_out_of_gas_says_so(cli_env: Any) -> None:
    h = cli_env.hearth
    s = h.sender(cli_env.accounts["client"].key)
    with pytest.raises(ChainError, match="ran out of gas"):
        s.send(h.usd.functions.approve(h.market.address, 5), gas=30_000)


def test_a_revert_without_data_says_the_contract_gave_no_reason(cli_env: Any) -> None:
    h = cli_env.hearth
    ghost = h.w3.eth.contract(address=h.market.address, abi=[{
        "type": "function", "name": "noSuchFunction", "stateMutability": "nonpayable", "inputs": [], "outputs": []}])
    with pytest.raises(ChainError) as caught:
        h.sender(cli_env.accounts["client"].key).send(ghost.functions.noSuchFunction())
    assert "the contract refused `noSuchFunction` without giving a reason" in str(caught.value)


def test_an_error_missing_from_the_table_still_reads_with_its_argument_names() -> None:
    abi = [{"type": "error", "name": "BondBelowMinimum", "inputs": [
        {"name": "jobId", "type": "uint256"}, {"name": "bond", "type": "uint256"},
        {"name": "committee", "type": "bytes32"}]}]
    data = keccak(text="BondBelowMinimum(uint256,uint256,bytes32)")[:4] + encode(
        ["uint256", "uint256", "bytes32"], [7, 12, b"\x01" * 32])

    class Reverted(Exception):
        pass

    exc = Reverted("execution reverted")
    exc.data = "0x" + data.hex()  # type: ignore[attr-defined]
    err = ErrorDecoder([abi]).from_exception(exc)
    assert err.error_name == "BondBelowMinimum" and err.error_args == (7, 12, b"\x01" * 32)
    assert str(err) == ("the call was refused by the contract: bond below minimum "
                        "(BondBelowMinimum, jobId=7, bond=12, committee=0x" + "01" * 32 + ")")


def test_an_entry_whose_arguments_changed_shape_falls_back_instead_of_failing() -> None:
    msg = explain_revert("WrongStatus", (4,), RevertContext(action="finalize", arg_names=("jobId",)))
    assert msg == "`finalize` was refused by the contract: wrong status (WrongStatus, jobId=4)"


SOL_ERROR = re.compile(r"\berror (\w+)\(([^)]*)\)\s*;")


def _sample(solidity_type: str) -> Any:
    """An argument of the declared type, as the ABI decoder would give it."""
    if solidity_type == "address":
        return "0x" + "ab" * 20
    if solidity_type.startswith("bytes"):
        return b"\x01" * 32
    return 7  # uint*, and enums (decoded as their uint8 index)


def test_every_custom_error_of_every_contract_reads_as_its_own_sentence() -> None:
    """Each error a contract can revert with has an entry in REVERT_MESSAGES that accepts the
    error's arguments as declared (a new error, or one whose arguments changed, fails here)."""
    root = Path(__file__).resolve().parents[2] / "contracts" / "src"
    declared = {m.group(1): m.group(2) for f in sorted(root.rglob("*.sol"))
                for m in SOL_ERROR.finditer(f.read_text())}
    assert {"WrongStatus", "UnknownBatch", "InsufficientLane", "DrawNotReady"} <= set(declared)
    generic = []
    for name, params in sorted(declared.items()):
        args = tuple(_sample(p.split()[0]) for p in params.split(",") if p.strip())
        names = tuple(p.split()[-1] for p in params.split(",") if p.strip())
        ctx = RevertContext(action="someCall", arg_names=names)
        if explain_revert(name, args, ctx).startswith("`someCall` was refused by the contract: "):
            generic.append(name)
    assert not generic, f"errors without a sentence of their own in contracts.errors.REVERT_MESSAGES: {generic}"


def _abi_sample(inp: dict[str, Any]) -> Any:
    """An argument of an ABI input, as the decoder would give it."""
    t = inp["type"]
    if t.endswith("]"):
        return [_abi_sample({**inp, "type": t[: t.rindex("[")]})]
    if t == "tuple":
        return tuple(_abi_sample(c) for c in inp["components"])
    return {"address": "0x" + "ab" * 20, "bool": True, "string": "x"}.get(t, b"\x01" * 32 if t.startswith("bytes")
                                                                           else 7)


def test_every_error_in_the_compiled_abis_reads_as_its_own_sentence() -> None:
    """The compiled ABIs also carry errors the contracts inherit (OpenZeppelin's ERC-20, ECDSA and
    ShortStrings in the tokens and EIP-712 contracts), which no source in contracts/src declares."""
    from contracts.artifacts import load_artifacts

    errors = {item["name"]: item for art in load_artifacts().values() for item in art.abi if item["type"] == "error"}
    assert {"ERC20InvalidReceiver", "ECDSAInvalidSignature", "WrongStatus"} <= set(errors)
    generic = []
    for name, item in sorted(errors.items()):
        args = tuple(_abi_sample(i) for i in item["inputs"])
        ctx = RevertContext(action="someCall", arg_names=tuple(i["name"] for i in item["inputs"]))
        if explain_revert(name, args, ctx).startswith("`someCall` was refused by the contract: "):
            generic.append(name)
    assert not generic, f"ABI errors without a sentence of their own in contracts.errors.REVERT_MESSAGES: {generic}"


def test_a_mined_transaction_that_reverted_without_a_reason_says_what_to_check(cli_env: Any) -> None:
    h = cli_env.hearth
    ghost = h.w3.eth.contract(address=h.market.address, abi=[{
        "type": "function", "name": "noSuchFunction", "stateMutability": "nonpayable", "inputs": [], "outputs": []}])
    with pytest.raises(ChainError) as caught:  # a fixed gas limit skips the estimate: mined, reverted
        h.sender(cli_env.accounts["client"].key).send(ghost.functions.noSuchFunction(), gas=100_000)
    msg = str(caught.value)
    assert "was mined in block" in msg and "but reverted without a reason" in msg
    assert "check the current state and retry `noSuchFunction`" in msg
