"""Every external function, custom error and event the interfaces declare is exercised by a
real assertion in these tests, found by reading the tests' syntax trees (a name merely written
somewhere, in a comment, a docstring or an unused list, does not count):

- a function: a call ``<contract>.functions.<name>(...)``, also through an alias of a
  contract's ``functions`` (``f = market.market.functions; f.<name>(...)``);
- an error: ``reverts("<Name>", ...)`` or ``expect(role, fn, "<Name>", ...)``, an ``assert`` on
  ``<x>.error_name == "<Name>"``, or an expected-error tuple ``("<Name>", ...)`` handed on in a
  module whose ``reverts(*error)`` asserts it;
- an event: the asserting helper ``event(rcpt, "<Name>")``, the name inside an ``assert``, or
  ``events(rcpt, "<Name>")`` / ``events_of(...)`` assigned to a name that an ``assert`` of the
  same function reads.

So a new function, error or event cannot land without a test that asserts it."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from contracts.artifacts import load_artifacts

INTERFACES = ("IJobMarket", "IStaking", "IModelRegistry", "IPaymentEscrow", "IBatchSettlement")
#: Declared in IJobMarket but raised nowhere in JobMarket: nothing can trigger them.
NEVER_RAISED = {"SignatureExpired", "NotJobProvider"}
HERE = Path(__file__).resolve().parent
#: helpers whose result lists a receipt's events (asserted when an assert reads the result)
EVENT_LISTS = {"events", "events_of", "logs"}


def declared(kind: str) -> list[tuple[str, str]]:
    arts = load_artifacts()
    return sorted({(i, item["name"]) for i in INTERFACES for item in arts[i].abi if item["type"] == kind})


@dataclass
class Asserted:
    """What a set of test sources calls and asserts, by name."""

    functions: set[str] = field(default_factory=set)
    errors: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)


def _callee(call: ast.Call) -> str | None:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    return f.id if isinstance(f, ast.Name) else None


def _name_of(node: ast.expr) -> str | None:
    """``x`` for ``x`` and ``self.x`` (the alias names a ``functions`` object may be bound to)."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _targets(node: ast.Assign | ast.AnnAssign | ast.For | ast.comprehension) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _functions_aliases(tree: ast.AST) -> set[str]:
    """Names bound to a contract's ``functions`` (``f = h.market.functions``, ``self.fn = ...``)."""
    out = {"functions"}
    for n in ast.walk(tree):
        if not isinstance(n, ast.Assign):
            continue
        pairs = [(t, n.value) for t in n.targets]
        pairs += [(t, v) for t in n.targets if isinstance(t, ast.Tuple) and isinstance(n.value, ast.Tuple)
                  for t, v in zip(t.elts, n.value.elts, strict=False)]  # f, m = x.functions, y
        out |= {a for t, v in pairs if isinstance(v, ast.Attribute) and v.attr == "functions"
                and (a := _name_of(t)) is not None}
    return out


def _scopes(tree: ast.Module) -> Iterable[ast.AST]:
    """Each function: its own asserts and assignments."""
    yield from (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


def scan(sources: dict[str, str]) -> Asserted:
    """What the test sources (file name -> text) assert, by the rules in this module's docstring."""
    got = Asserted()
    for text in sources.values():
        tree = ast.parse(text)
        aliases = _functions_aliases(tree)
        asserts_reverts = any(isinstance(n, ast.Call) and _callee(n) == "reverts" and n.args
                              and isinstance(n.args[0], ast.Starred) for n in ast.walk(tree))
        for n in ast.walk(tree):
            if isinstance(n, ast.Call):
                name = _callee(n)
                if name == "reverts" and n.args and isinstance(n.args[0], ast.Constant):
                    got.errors |= _strings(n.args[0])
                elif name == "expect" and len(n.args) > 2 and isinstance(n.args[2], ast.Constant):
                    got.errors |= _strings(n.args[2])
                elif name == "event":
                    got.events |= {s for a in n.args if isinstance(a, ast.Constant) for s in _strings(a)}
                if isinstance(n.func, ast.Attribute) and _name_of(n.func.value) in aliases:
                    got.functions.add(n.func.attr)
            elif isinstance(n, ast.Assert):
                got.events |= _strings(n.test)
                for c in ast.walk(n.test):
                    if isinstance(c, ast.Compare) and isinstance(c.left, ast.Attribute) and c.left.attr == "error_name":
                        got.errors |= _strings(c)
        for scope in _scopes(tree):
            asserted = set().union(*(_reads(a.test) for a in ast.walk(scope) if isinstance(a, ast.Assert)))
            passed_on = {r for c in ast.walk(scope) if isinstance(c, ast.Call) for a in c.args for r in _reads(a)}
            for a in ast.walk(scope):
                if not isinstance(a, ast.Assign | ast.AnnAssign | ast.For | ast.comprehension):
                    continue
                value = a.iter if isinstance(a, ast.For | ast.comprehension) else a.value
                if value is None:
                    continue
                names = _targets(a)
                if names & asserted:
                    for c in ast.walk(value):
                        if isinstance(c, ast.Call) and _callee(c) in EVENT_LISTS:
                            got.events |= {s for x in c.args if isinstance(x, ast.Constant) for s in _strings(x)}
                if (asserts_reverts and names & passed_on and isinstance(value, ast.Tuple) and value.elts
                        and isinstance(value.elts[0], ast.Constant) and isinstance(value.elts[0].value, str)):
                    got.errors.add(value.elts[0].value)
    return got


def unasserted(got: Asserted) -> list[str]:
    """``kind Interface.name`` for everything declared that ``got`` does not assert."""
    out = []
    for kind, names in (("function", got.functions), ("error", got.errors), ("event", got.events)):
        out += [f"{kind} {i}.{n}" for i, n in declared(kind)
                if n not in names and not (kind == "error" and n in NEVER_RAISED)]
    return out


@cache
def this_suite() -> Asserted:
    return scan({p.name: p.read_text() for p in sorted(HERE.glob("*.py")) if p.name != Path(__file__).name})


@pytest.mark.parametrize(("interface", "name"), declared("function"))
def test_every_declared_function_is_called_by_a_test(interface: str, name: str) -> None:
    assert f"function {interface}.{name}" not in unasserted(this_suite()), f"no test calls {interface}.{name}"


@pytest.mark.parametrize(("interface", "name"), declared("error"))
def test_every_declared_error_is_asserted_by_a_test(interface: str, name: str) -> None:
    if name in NEVER_RAISED:
        assert name not in (HERE.parents[1] / "contracts" / "src" / "JobMarket.sol").read_text(), (
            f"{name} is raised now: assert it in a test and drop it from NEVER_RAISED")
        return
    assert f"error {interface}.{name}" not in unasserted(this_suite()), f"no test asserts {interface}.{name}"


@pytest.mark.parametrize(("interface", "name"), declared("event"))
def test_every_declared_event_is_asserted_by_a_test(interface: str, name: str) -> None:
    assert f"event {interface}.{name}" not in unasserted(this_suite()), f"no test asserts {interface}.{name}"


FAKE = '''
"""Mentions InvalidSignature, JobPosted and postJob in a docstring."""
NAMES = ["InvalidSignature", "JobPosted", "JobClaimed"]  # named, never asserted


def test_named_but_not_asserted(market):
    market.market.functions.postJob  # looked up, never called
    market.events(rcpt, "JobClaimed")  # listed, the result never read
    with pytest.raises(ChainError):
        market.send("client", market.market.functions.claimJob(1, job))  # any revert would do
    error = ("ZeroUnits", 1)  # predicted, never handed to an assertion
'''

REAL = '''
def test_asserted(market, rcpt):
    f = market.market.functions
    with reverts("InvalidSignature"):
        market.send("client", f.postJob(1, 2, 3, 4))
    claimed = market.events(rcpt, "JobClaimed")
    assert claimed[0]["provider"] == market.addr("provider")
    assert market.event(rcpt, "JobPosted")["jobId"] == 1


class Machine:
    def __init__(self, m):
        self.fn = m.market.functions

    def test_predicted(self):
        error = ("ZeroUnits", 1)
        self.act("provider", self.fn.submitReceipt(1), error)


def act(self, role, fn, error):
    with reverts(*error):
        self.send(role, fn)
'''


def test_names_that_are_only_mentioned_do_not_count() -> None:
    fake = scan({"test_fake.py": FAKE})
    assert fake.functions & {"postJob", "claimJob"} == {"claimJob"}, "a lookup without a call is no call"
    assert not fake.errors & {"InvalidSignature", "ZeroUnits"}
    assert not fake.events & {"JobPosted", "JobClaimed"}
    real = scan({"test_real.py": REAL})
    assert {"postJob", "submitReceipt"} <= real.functions
    assert {"InvalidSignature", "ZeroUnits"} <= real.errors
    assert {"JobPosted", "JobClaimed"} <= real.events


def test_the_check_complains_about_a_test_source_that_lacks_assertions() -> None:
    """The whole check over a suite of one fake test file: what it only mentions is reported,
    and so is everything it never touches; the real suite leaves nothing out."""
    missing = unasserted(scan({"test_fake.py": FAKE}))
    for expected in ("function IJobMarket.postJob", "error IJobMarket.InvalidSignature", "error IJobMarket.ZeroUnits",
                     "event IJobMarket.JobPosted", "event IJobMarket.JobClaimed", "event IStaking.Staked"):
        assert expected in missing
    assert "function IJobMarket.claimJob" not in missing
    assert unasserted(this_suite()) == []
