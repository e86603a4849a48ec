"""The README's command-line walkthrough is true as written: every `$ hearth ...` line of its
session is run in order against a fresh devnet (what `make devnet` starts), and what each prints
equals the README's text up to the numbers and hashes that differ per devnet; so do what
`make devnet` prints and the error the README quotes for the same commands under `make up`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from common import accounts as accts
from deploy.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"
runner = CliRunner()


def section() -> str:
    return README.read_text().split("### A job from the command line")[1].split("\n### ")[0]


def console_block(after: str) -> str:
    """The first ```console block of the walkthrough's section after the text ``after``."""
    text = section()
    block = text[text.index(after):]
    block = block[block.index("```console\n") + len("```console\n"):]
    return block[:block.index("\n```")]


def walkthrough() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of the README's walkthrough session."""
    block = console_block("In another")
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def normalize(lines: list[str]) -> list[str]:
    out = []
    for ln in lines:
        ln = re.sub(r"0x[0-9a-fA-F]+", "0x…", ln.rstrip())
        ln = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "TIME", ln)
        out.append(re.sub(r"\b(block|time|until) \d+", r"\1 N", ln))
    return [ln for ln in out if ln]


@pytest.fixture
def cli_env(fresh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HEARTH_MANIFEST", raising=False)
    fresh.manifest.save(tmp_path / "manifest.json")
    accts.save(fresh.accounts, tmp_path / "devnet-accounts.json")
    return fresh


def test_the_readme_walkthrough_prints_what_the_readme_says(cli_env: Any) -> None:
    steps = walkthrough()
    assert [c.split()[:3] for c, _ in steps][:3] == [["hearth", "job", "post"], ["hearth", "job", "claim"],
                                                     ["hearth", "job", "deliver"]]
    for command, expected in steps:
        argv = shlex.split(command)
        assert argv[0] == "hearth"
        r = runner.invoke(app, argv[1:])
        refused = expected[0].startswith("error:")
        assert r.exit_code == (1 if refused else 0), f"$ {command}\n{r.output}"
        assert normalize(r.output.splitlines()) == normalize(expected), f"$ {command}\n{r.output}"


def test_the_readme_says_to_run_the_walkthrough_on_make_devnet_and_why() -> None:
    text = section()
    assert "run `make devnet`" in text and "not\n`make up`" in text
    assert "the stack's own worker claims" in text


def test_make_devnet_prints_what_the_readme_shows(devnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from deploy import devnet as dn

    block = console_block("In one terminal").splitlines()
    assert block[0] == "$ make devnet"
    # The session devnet's deployment, printed by `python -m deploy devnet`'s own code; its Anvil
    # is a stand-in that has just exited, so the function returns after printing.
    anvil = SimpleNamespace(rpc_url=devnet.anvil.rpc_url, proc=SimpleNamespace(poll=lambda: 0), stop=lambda: None)
    monkeypatch.setattr(dn, "bring_up", lambda **_: SimpleNamespace(anvil=anvil, manifest=devnet.manifest))
    monkeypatch.setattr(dn, "stop_on_signals", lambda: None)
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HEARTH_MANIFEST", raising=False)
    dn.run_foreground(port=18547, chain_id=31337, block_time=None)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == "anvil exited"

    def same(lines: list[str]) -> list[str]:  # addresses, the port and the manifest's path differ per run
        out = [re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", re.sub(r"0x[0-9a-fA-F]{40}", "0x…", ln)) for ln in lines]
        return [re.sub(r"^(  manifest +)/\S+/manifest\.json$", r"\1PATH", ln) for ln in out]

    assert same(printed[:-1]) == same(block[1:])


def test_the_error_the_readme_quotes_for_make_up_is_what_the_cli_prints(cli_env: Any) -> None:
    """Under `make up` the stack's worker has claimed and delivered job 1 before the reader's
    `hearth job claim 1 --as provider`; the README quotes what that claim answers."""
    quoted = re.search(r"`(hearth job claim 1 --as provider)` then answers\n`(error: [^`]+)`", section())
    assert quoted, "the README quotes the claim under make up and its answer"
    for step in (["job", "post", "--text", "hello hearth", "--approve", "--as", "client"],
                 ["job", "claim", "1", "--as", "provider"], ["job", "deliver", "1", "--as", "provider"]):
        assert runner.invoke(app, step).exit_code == 0
    r = runner.invoke(app, shlex.split(quoted.group(1))[1:])
    assert r.exit_code == 1 and " ".join(r.output.split()) == quoted.group(2)
