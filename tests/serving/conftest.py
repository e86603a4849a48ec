"""Fixtures of the serving-plane tests: one stack per module (chain snapshotted before, reverted
after), two provider endpoint processes in different regions at different quoted prices, a
payer whose lanes are funded and who authorized the gateway's receipt signer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_stack import ServingStack, serving_stack  # noqa: E402

#: role -> (region, price per unit): "verifier" is cheaper, "provider" is in "eu"
PROVIDERS = {"provider": ("eu", 200), "verifier": ("us", 100)}


@pytest.fixture(scope="module")
def stack(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    with serving_stack(devnet, chain, tmp_path_factory.mktemp("serving"),
                       {role: (region, price, {"HEARTH_SERVING_COLLECT_THRESHOLD": "1"})
                        for role, (region, price) in PROVIDERS.items()}) as st:
        yield st
