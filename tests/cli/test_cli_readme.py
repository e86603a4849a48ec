"""The README's command-line walkthrough is true as written: every `$ hearth ...` line of its
session is run in order against a fresh devnet (what `make devnet` starts), and what each prints
equals the README's text up to the numbers and hashes that differ per devnet."""

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


def walkthrough() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of the README's walkthrough session."""
    text = README.read_text()
    section = text[text.index("### A job from the command line"):]
    block = section[section.index("In another"):]
    block = block[block.index("```console\n") + len("```console\n"):]
    block = block[:block.index("\n```")]
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
    section = README.read_text().split("### A job from the command line")[1].split("###")[0]
    assert "run `make devnet`" in section and "not\n`make up`" in section
    assert "the stack's own worker claims" in section
