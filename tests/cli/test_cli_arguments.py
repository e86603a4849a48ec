"""Numeric arguments, a refused devnet call and an impossible post: each gets one clear line and
a non-zero exit, no traceback, and nothing is sent to the chain before everything is checked.
Every numeric option of every sub-command is tried with NaN, infinities, negative, huge and hex
values somewhere below."""

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


def refused(args: list[str], code: int = 1) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output and "No such option" not in r.output
    return " ".join(r.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["provider", "stake", "NaN", "--as", "provider"], "amount must be a finite number, not 'NaN'"),
        (["provider", "stake", "Infinity", "--as", "provider"], "amount must be a finite number, not 'Infinity'"),
        (["provider", "stake", "-Infinity", "--as", "provider"], "amount must be a finite number"),
        (["provider", "stake", "-1", "--as", "provider"], "amount must be positive: -1"),
        (["provider", "stake", "--as", "provider", "-2.5"], "amount must be positive: -2.5"),
        (["provider", "unbond", "-1e3", "--as", "provider"], "amount must be positive: -1e3"),
        (["provider", "stake", "1e999999999", "--as", "provider"], "is too large"),
        (["provider", "stake", "1.0000000000000000001", "--as", "provider"], "more than 18 decimals"),
        (["job", "post", "--text", "x", "--max-payment", "NaN", "--as", "client"],
         "--max-payment must be a finite number, not 'NaN'"),
        (["job", "post", "--text", "x", "--max-payment", "-3", "--as", "client"], "--max-payment must be positive: -3"),
        (["job", "post", "--text", "x", "--max-payment", "1e30", "--as", "client"], "--max-payment 1e30 is too large"),
        (["job", "post", "--text", "x", "--deadline", "-100", "--approve", "--as", "client"],
         "--deadline must be a positive number of seconds from now, not -100"),
        (["job", "post", "--text", " ", "--as", "client"], "--text is empty"),
        (["devnet", "advance", "99999999999999999999"],
         "cannot move the devnet clock by 99999999999999999999s: chain time would be"),
        # Anvil takes these (it wraps 2**64 - 1 to a no-op) and leaves times no contract can hold.
        (["devnet", "advance", str(2**64 - 1)], "past 1099511627775, the latest time the contracts can hold (uint40)"),
        (["devnet", "advance", str(2**63 - 1)], "past 1099511627775, the latest time the contracts can hold (uint40)"),
        (["devnet", "advance", "2000000000000"], "past 1099511627775, the latest time the contracts can hold (uint40)"),
        (["provider", "stake", "1e400", "--as", "provider"],
         "at most 115,792,089,237,316,195,423,570,985,008,687,907,853,269,984,665,640,564,039,457.584008"),
        (["provider", "register", "--endpoint", "http://127.0.0.1:9", "--stake", "NaN", "--as", "client"],
         "--stake must be a finite number, not 'NaN'"),
        (["provider", "register", "--endpoint", "http://127.0.0.1:9", "--gpu-class", "g" * 33, "--as", "client"],
         "GPU class name longer than 32 bytes"),
        (["provider", "join", "--endpoint", "http://127.0.0.1:9", "--price", "5", "--stake", "NaN", "--as", "client"],
         "--stake must be a finite number, not 'NaN'"),
        (["provider", "join", "--endpoint", "http://127.0.0.1:9", "--price", "5", "--stake", "-1", "--as", "client"],
         "--stake must be positive: -1"),
        (["provider", "status", "--from-block", "99999999", "--as", "provider"],
         "--from-block 99999999 is after the chain's head"),
        (["job", "status", "9" * 85], f"unknown job {'9' * 85}"),
        (["escrow", "deposit", "-5", "--as", "client"], "amount must be positive: -5"),
        (["escrow", "deposit", "inf", "--as", "client"], "amount must be a finite number, not 'inf'"),
        (["escrow", "thaw", "-1", "--provider", "provider", "--as", "client"], "amount must be positive: -1"),
        (["batch", "quote", "9" * 81, "--as", "provider"], f"the quoted price {'9' * 81} is above the ceiling 1000"),
        (["batch", "quote", "15", "--model", "0x12", "--as", "provider"], "model id must be 32 bytes, got 1"),
    ],
)
def test_bad_numbers_get_one_line_saying_what_is_wrong(cli_env: Any, args: list[str], message: str) -> None:
    assert message in refused(args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["devnet", "advance", "-5"], "Invalid value for 'seconds': Input should be greater than or equal to 1"),
        (["job", "status", "-3"], "Invalid value for 'job_id': Input should be greater than or equal to 1"),
        (["job", "claim", "NaN", "--as", "provider"], "Invalid value for 'job_id': Input should be a valid integer"),
        (["batch", "quote", "-5", "--as", "provider"], "Invalid value for 'price': Input should be greater than or"),
        (["batch", "draw", "5", "-1", "--as", "verifier"], "Invalid value for 'index': Input should be greater than"),
        (["batch", "draw", "9" * 85, "0", "--as", "verifier"], "Invalid value for 'batch_id': Input should be less"),
        (["batch", "challenge", "-1", "0", "--as", "verifier"], "Invalid value for 'batch_id': Input should be"),
        (["escrow", "authorize-signer", "--days", "99999999999999999999", "--as", "client"],
         "Invalid value for '--days': Input should be less than or equal to 36500"),
        (["escrow", "authorize-signer", "--days", "-1", "--as", "client"],
         "Invalid value for '--days': Input should be greater than or equal to 1"),
        (["escrow", "receipt", "--provider", "provider", "--units", "-5", "--as", "client"],
         "Invalid value for '--units': Input should be greater than or equal to 1"),
        (["escrow", "receipt", "--provider", "provider", "--units", str(2**64), "--as", "client"],
         "Invalid value for '--units': Input should be less than or"),
    ],
)
def test_negative_or_non_integer_ids_are_usage_errors_naming_the_argument(
        cli_env: Any, args: list[str], message: str) -> None:
    assert message in refused(args, code=2)


def test_a_refused_clock_move_leaves_the_clock_where_it_was(cli_env: Any, chain: Any) -> None:
    before = chain.timestamp()
    refused(["devnet", "advance", "99999999999999999999"])
    assert chain.timestamp() - before < 5
    r = runner.invoke(app, ["devnet", "advance", "601"])
    assert r.exit_code == 0, r.output
    assert "devnet clock moved" in r.output and chain.timestamp() - before >= 601


def test_an_impossible_post_sends_no_transaction_not_even_the_approval(cli_env: Any) -> None:
    h = cli_env.hearth
    client = cli_env.accounts["client"].address
    nonce = h.w3.eth.get_transaction_count(client)
    refused(["job", "post", "--text", "x", "--deadline", "-100", "--approve", "--as", "client"])
    refused(["job", "post", "--text", "x", "--deadline", str(2**41), "--approve", "--as", "client"])
    assert h.w3.eth.get_transaction_count(client) == nonce
    assert h.usd.functions.allowance(client, h.market.address).call() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["provider", "register", "--endpoint", "http://127.0.0.1:9", "--model", "zz", "--as", "client"],
         "model id is not hex: 'zz'"),
        (["provider", "register", "--endpoint", "http://127.0.0.1:9", "--stake", "1", "--as", "client"],
         "--stake 1 HST is below the minimum stake of 100.000000 HST"),
        (["provider", "register", "--endpoint", "http://127.0.0.1:9", "--as", "client"],
         "insufficient HST balance: 0.000000 < 100.000000 HST"),
        (["provider", "register", "--endpoint", "http://127.0.0.1:9", "--as", "provider"],
         "is already a registered provider"),
        (["provider", "join", "--endpoint", "http://127.0.0.1:9", "--price", "5", "--stake", "1", "--as", "client"],
         "--stake 1 HST is below the minimum stake of 100.000000 HST a provider registers with"),
        (["provider", "join", "--endpoint", "http://127.0.0.1:9", "--price", "5", "--as", "client"],
         "insufficient HST balance to stake 500.000000 more"),
        (["escrow", "deposit", "5", "--to", "nobody", "--as", "client"], "not an address or devnet role: 'nobody'"),
    ],
)
def test_a_refused_command_sends_no_transaction_not_even_an_approval(
        cli_env: Any, args: list[str], message: str) -> None:
    h = cli_env.hearth
    who = cli_env.accounts[args[-1]].address
    nonce = h.w3.eth.get_transaction_count(who)
    assert message in refused(args)
    assert h.w3.eth.get_transaction_count(who) == nonce


def test_joining_as_a_new_provider_registers_it_with_its_stake(cli_env: Any) -> None:
    from deploy.devnet import HST, fund

    h = cli_env.hearth
    me = cli_env.accounts["client2"].address
    fund(h, cli_env.accounts["deployer"].key, me, hst=200 * HST)
    r = runner.invoke(app, ["provider", "join", "--endpoint", "http://127.0.0.1:8109", "--region", "eu",
                            "--price", "150", "--stake", "150", "--as", "client2"])
    assert r.exit_code == 0, r.output
    p = h.staking.functions.getProvider(me).call()
    assert p[5] and p[0] == 150 * HST and (p[6], p[7]) == ("http://127.0.0.1:8109", "eu")
    model = bytes.fromhex(cli_env.manifest.models[0].model_id[2:])
    assert h.staking.functions.serves(me, model).call()
    assert h.settlement.functions.priceOf(me, model).call() == 150


@pytest.mark.parametrize(
    "args",
    [
        ["devnet", "up", "--block-time", "nan"],
        ["devnet", "up", "--block-time", "inf"],
        ["devnet", "up", "--block-time", "-1"],
        ["devnet", "up", "--block-time", "0.5"],
        ["devnet", "up", "--port", "70000"],
        ["devnet", "up", "--port", "-1"],
        ["devnet", "up", "--chain-id", "0"],
        ["devnet", "up", "--chain-id", str(2**64)],
        ["up", "--stop-timeout", "nan"],
        ["up", "--stop-timeout", "inf"],
        ["up", "--block-time", "1e400"],
        ["up", "--block-time", "0.5"],
        ["up", "--gateway-port", "0"],
    ],
)
def test_devnet_and_stack_options_are_checked_before_anything_starts(
        monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    def started(*_: Any, **__: Any) -> None:
        raise AssertionError(f"started with {args}")

    monkeypatch.setattr("deploy.devnet.run_foreground", started)
    monkeypatch.setattr("deploy.up.run_stack", started)
    r = runner.invoke(app, args)
    assert r.exit_code in (1, 2), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output and "No such option" not in r.output


def test_block_times_are_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("deploy.devnet.run_foreground", lambda *a: None)
    assert "--block-time takes whole seconds (0 mines a block per transaction), not 0.5" in refused(
        ["devnet", "up", "--block-time", "0.5"])


def test_service_settings_refuse_nan_infinite_and_impossible_ports() -> None:
    from pydantic import ValidationError

    from gateway.settings import GatewaySettings
    from indexer.settings import IndexerSettings
    from worker.settings import WorkerSettings

    for make in (lambda: WorkerSettings(poll_interval_s=float("nan")), lambda: WorkerSettings(poll_interval_s=-1),
                 lambda: WorkerSettings(poll_interval_s=float("inf")),
                 lambda: IndexerSettings(poll_interval=float("inf")), lambda: IndexerSettings(metrics_port=70000),
                 lambda: GatewaySettings(port=-1), lambda: GatewaySettings(port=65536)):
        with pytest.raises(ValidationError):
            make()
    assert WorkerSettings(poll_interval_s=0).poll_interval_s == 0  # a busy loop is allowed (tests use it)


def test_amounts_are_shown_exactly_at_any_size() -> None:
    from deploy.cli import fmt

    largest = "115,792,089,237,316,195,423,570,985,008,687,907,853,269,984,665,640,564,039,457.584008"
    assert fmt(2**256 - 1, 18) == largest
    assert fmt(-1_500_000, 6) == "-1.500000" and fmt(0, 18) == "0.000000"
