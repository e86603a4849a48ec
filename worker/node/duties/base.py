"""What every duty shares: the operator (key, sender, state file, executor, log) and the
:class:`Duty` base class, plus small helpers for hex and log fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from web3.types import EventData

from common.blobs import BlobStore
from contracts.bindings import Hearth, decode_log
from contracts.chain import TxSender
from contracts.types import Job
from worker.node.config import NodeConfig
from worker.node.errors import NodeError
from worker.node.executor import Executor
from worker.node.sources import ChainReader, tx_hex
from worker.node.state import NodeState
from worker.node.view import TickContext


class NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds the node's label to per-call ``extra`` (job_id, block, tx); the formatter of
    :mod:`common.log` prints them all."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


@dataclass
class Operator:
    """One operator key and what acts for it; every duty of a node shares one."""

    h: Hearth
    key: str
    sender: TxSender
    store: BlobStore
    executor: Executor
    config: NodeConfig
    state: NodeState
    reader: ChainReader
    log: NodeLog
    gpu_class: bytes

    @property
    def address(self) -> str:
        return str(self.sender.address)

    @property
    def model_id(self) -> bytes:
        return self.executor.model_hash

    @property
    def runtime_hash(self) -> bytes:
        return self.executor.runtime_hash

    def mine(self, job: Job) -> bool:
        return job.provider.lower() == self.address.lower()

    def event(self, rcpt: Any, name: str) -> EventData:
        """The market event ``name`` of a mined transaction."""
        for lg in rcpt["logs"]:
            if lg["address"] == self.h.market.address:
                ev = decode_log(self.h.market, lg)
                if ev["event"] == name:
                    return ev
        raise NodeError(f"transaction {tx_hex(rcpt)} emitted no {name}")


class Duty:
    """One job of the node, run once per tick over the tick's context. A duty raises only for
    what it cannot handle; the node counts its consecutive failures (see :class:`~worker.node.node.Node`)."""

    name: ClassVar[str] = "duty"

    def __init__(self, op: Operator) -> None:
        self.op = op
        # Named by the duty's module (``worker.node.duties.provider``...), labelled by the node.
        self.log = NodeLog(logging.getLogger(type(self).__module__), op.log.extra)

    def run(self, ctx: TickContext) -> None:
        raise NotImplementedError


def h(b: bytes) -> str:
    """Bytes as ``0x`` hex."""
    return "0x" + b.hex()


def kv(**fields: Any) -> str:
    """``k=v`` pairs for a log line (``None`` values left out)."""
    return " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
