"""The production configuration under ``deploy/`` cannot rot: every setting the systemd units
and the env templates name is a field of one of the services' Settings classes, the values in
the templates validate with those classes, every unit's ``EnvironmentFile`` has a template, and
every command a unit starts is a module of this repository."""

from __future__ import annotations

import os
import re
import shlex
from importlib.util import find_spec
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
TEMPLATES = sorted((ROOT / "deploy" / "env").glob("*.env.example"))
#: variables read by software other than Hearth's Settings classes, and why they may appear
EXTERNAL = {
    "PYTHONUNBUFFERED": "Python: log lines leave at once",
    "CUDA_VISIBLE_DEVICES": "CUDA: pins a Celery worker to its GPU",
    "AWS_ACCESS_KEY_ID": "boto3's credential chain (S3 blob store)",
    "AWS_SECRET_ACCESS_KEY": "boto3's credential chain (S3 blob store)",
}
ASSIGNMENT = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def settings_classes() -> list[type[BaseSettings]]:
    from deploy.settings import CliSettings, UpSettings
    from gateway.settings import GatewaySettings
    from indexer.settings import IndexerSettings
    from worker.serving.__main__ import ServingSettings
    from worker.settings import WorkerSettings

    return [GatewaySettings, IndexerSettings, WorkerSettings, ServingSettings, CliSettings, UpSettings]


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a Settings class reads (its aliases, else prefix + field)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for name, f in cls.model_fields.items():
        alias = f.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(c).upper() for c in alias.choices if isinstance(c, str) and c.isupper()}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add((prefix + name).upper())
    return names


def known() -> set[str]:
    out: set[str] = set()
    for cls in settings_classes():
        out |= env_names(cls)
    return out


def template(path: Path) -> dict[str, str]:
    """Every ``NAME=value`` of an env template, commented-out optional ones included."""
    out = {}
    for line in path.read_text().splitlines():
        m = ASSIGNMENT.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def unit(path: Path) -> dict[str, list[str]]:
    """A unit file's ``Key=Value`` lines (a key may repeat, as ``Environment=`` does)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def unit_variables(u: dict[str, list[str]]) -> set[str]:
    names = set()
    for assignment in u.get("Environment", []):
        for word in shlex.split(assignment):
            names.add(word.split("=", 1)[0])
    for line in u.get("ExecStart", []):
        names |= set(re.findall(r"\$\{([A-Z0-9_]+)\}", line))
    return names


def test_there_are_units_for_a_provider_host_and_a_gateway_host_each_with_its_template() -> None:
    names = {p.name for p in UNITS}
    assert {"hearth-provider.service", "hearth-gateway.service", "hearth-indexer.service",
            "hearth-celery@.service"} <= names
    assert {p.name for p in TEMPLATES} == {"provider.env.example", "gateway.env.example"}
    for p in UNITS:
        u = unit(p)
        (env_file,) = u["EnvironmentFile"]
        assert (ROOT / "deploy" / "env" / (Path(env_file).name + ".example")).exists(), f"{p.name}: {env_file}"


@pytest.mark.parametrize("path", TEMPLATES + UNITS, ids=lambda p: p.name)
def test_every_setting_named_exists_in_a_settings_class(path: Path) -> None:
    names = set(template(path)) if path.name.endswith(".example") else unit_variables(unit(path))
    assert names, f"{path.name} names no settings"
    unknown = {n for n in names if n not in known() and n not in EXTERNAL}
    assert not unknown, f"{path.name} names settings no Settings class reads: {sorted(unknown)}"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_the_values_in_a_template_validate_with_the_settings_classes(path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    values = template(path)
    for name in list(os.environ):
        if name.startswith("HEARTH_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for cls in settings_classes():
        if env_names(cls) & set(values):
            cls()  # raises pydantic's ValidationError on a value of the wrong type


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_every_unit_starts_a_module_of_this_repository(path: Path) -> None:
    (cmd,) = unit(path)["ExecStart"]
    argv = shlex.split(cmd)
    assert argv[1] == "-m", cmd
    module = argv[2]
    spec = find_spec(module)
    assert spec is not None, f"{path.name}: no module {module}"
    if module != "celery":
        assert spec.origin is not None and Path(spec.origin).resolve().is_relative_to(ROOT), spec.origin
    else:
        assert find_spec(argv[argv.index("-A") + 1]) is not None
