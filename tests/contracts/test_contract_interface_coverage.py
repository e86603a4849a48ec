"""Every custom error and event the interfaces declare is asserted by name somewhere in these
tests, so a new error or event cannot land without a test for it."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from contracts.artifacts import load_artifacts

INTERFACES = ("IJobMarket", "IStaking", "IModelRegistry", "IPaymentEscrow", "IBatchSettlement")
#: Declared in IJobMarket but raised nowhere in JobMarket: nothing can trigger them.
NEVER_RAISED = {"SignatureExpired", "NotJobProvider"}
HERE = Path(__file__).resolve().parent


def declared(kind: str) -> list[tuple[str, str]]:
    arts = load_artifacts()
    return sorted({(i, item["name"]) for i in INTERFACES for item in arts[i].abi if item["type"] == kind})


@cache
def other_test_sources() -> str:
    return "\n".join(p.read_text() for p in HERE.glob("test_*.py") if p.name != Path(__file__).name)


@pytest.mark.parametrize(("interface", "name"), declared("error"))
def test_every_declared_error_is_asserted_by_a_test(interface: str, name: str) -> None:
    if name in NEVER_RAISED:
        assert name not in (HERE.parents[1] / "contracts" / "src" / "JobMarket.sol").read_text(), (
            f"{name} is raised now: assert it in a test and drop it from NEVER_RAISED")
        return
    assert f'"{name}"' in other_test_sources(), f"no test asserts {interface}.{name}"


@pytest.mark.parametrize(("interface", "name"), declared("event"))
def test_every_declared_event_is_asserted_by_a_test(interface: str, name: str) -> None:
    assert f'"{name}"' in other_test_sources(), f"no test asserts {interface}.{name}"
