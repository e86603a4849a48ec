"""Numeric arguments, a refused devnet call and an impossible post: each gets one clear line and
a non-zero exit, no traceback, and nothing is sent to the chain before everything is checked."""

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
         "the devnet refused to move its clock by 99999999999999999999s"),
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
