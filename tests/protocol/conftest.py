"""Fixtures of the protocol-layer tests: one in-process encoder for the session (CPU torch path)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.node.compute import shared_encoder


@pytest.fixture(scope="session")
def encoder() -> Any:
    return shared_encoder("torch", "fp32", "cpu")
