"""Fixtures of the contract tests: the session devnet driven through :class:`Market`, with chain
time frozen (see :class:`Clock`) and every change reverted after the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from contract_kit import Market
from settlement_kit import Settle


@pytest.fixture
def market(fresh: Any) -> Iterator[Market]:
    """The devnet's deployment, reverted after the test; time moves only by ``clock.warp``."""
    m = Market.from_devnet(fresh)
    m.clock.freeze()
    try:
        yield m
    finally:
        m.clock.unfreeze()


@pytest.fixture
def settle(market: Market) -> Settle:
    """The devnet's escrow and batch settlement on top of ``market`` (same snapshot and clock)."""
    return Settle(market)
