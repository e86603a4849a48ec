"""What a node is told (:class:`NodeConfig`, from :class:`~worker.settings.WorkerSettings`) and
what one tick did (:class:`TickReport`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from worker.settings import Role

#: ``checkpoint(name, job_ids)`` is called after each step with the jobs it advanced (a test hook).
Checkpoint = Callable[[str, list[int]], None]


@dataclass(frozen=True)
class NodeConfig:
    role: Role = "provider"
    sample_all: bool = False
    gpu_class: str = "cpu"
    confirmations: int = 0
    log_chunk_blocks: int = 5000
    max_open_jobs: int = 64
    min_deadline_margin_s: int = 30
    withdraw_interval_s: float = 3600.0
    min_withdraw: int = 1
    max_input_bytes: int = 1 << 20
    poll_interval_s: float = 2.0
    input_retry_s: float = 5.0
    max_input_attempts: int = 60
    claim_pause_s: float = 60.0
    max_duty_failures: int = 20
    """A duty that fails this many ticks in a row stops the node (:class:`~worker.node.errors.DutyFailedError`)."""
    name: str | None = None
    """A label for log lines (default: the start of the operator address)."""

    @property
    def provides(self) -> bool:
        return self.role in ("provider", "both")

    @property
    def verifies(self) -> bool:
        return self.role in ("verifier", "both")


@dataclass
class TickReport:
    """What one tick did (job ids per action), for callers and tests."""

    block: int = 0
    timestamp: int = 0
    claimed: list[int] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    verified: list[int] = field(default_factory=list)
    challenged: list[int] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)
    revealed: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    withdrawn: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    """Duties that raised in this tick (name -> error), when the tick was not strict."""
