"""Workloads behind one interface: count units, canonical request, execute a batch, canonical
output, compare. `EmbeddingWorkload` (all-MiniLM-L6-v2) and `GenerationWorkload` (SmolLM2)
implement `Workload`; a node can hold both and route a job by its model id.
"""

from worker.workloads.base import Workload, WorkloadError
from worker.workloads.embedding import EmbeddingWorkload
from worker.workloads.generation import GenerationRequest, GenerationResult, GenerationWorkload

__all__ = [
    "EmbeddingWorkload",
    "GenerationRequest",
    "GenerationResult",
    "GenerationWorkload",
    "Workload",
    "WorkloadError",
]
