"""Variable-length ("packed") batch layout shared by the torch and Triton forward paths.

The tokens of all sequences are concatenated without padding; `cu_seqlens` marks where each
sequence starts. No computation ever sees another sequence's tokens or a padding token, which
is the first half of batch invariance (the second half is fixed shapes per row block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from worker.model.errors import InvalidInputError
from worker.model.weights import MAX_POSITIONS


@dataclass(frozen=True)
class PackedBatch:
    """Token ids of a batch, concatenated, with each token's position in its own sequence."""

    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    cu_seqlens: tuple[int, ...]  # B + 1 offsets into the token axis, starting at 0

    @property
    def num_seqs(self) -> int:
        """Number of sequences B."""
        return len(self.cu_seqlens) - 1

    @property
    def num_tokens(self) -> int:
        """Total number of real tokens T."""
        return self.cu_seqlens[-1]

    @property
    def lengths(self) -> list[int]:
        """Length of each sequence."""
        c = self.cu_seqlens
        return [c[i + 1] - c[i] for i in range(len(c) - 1)]

    @property
    def max_len(self) -> int:
        """Length of the longest sequence (0 for an empty batch)."""
        return max(self.lengths, default=0)

    def to(self, device: torch.device | str) -> PackedBatch:
        """Copy the tensors to `device`."""
        return PackedBatch(
            input_ids=self.input_ids.to(device),
            positions=self.positions.to(device),
            cu_seqlens=self.cu_seqlens,
        )


def pack(ids: Sequence[Sequence[int]]) -> PackedBatch:
    """Concatenate token id lists into a `PackedBatch`; every list must be non-empty."""
    cu = [0]
    for row in ids:
        if not 0 < len(row) <= MAX_POSITIONS:
            raise InvalidInputError(f"sequence length {len(row)} outside 1..{MAX_POSITIONS}")
        cu.append(cu[-1] + len(row))
    flat = [t for row in ids for t in row]
    positions = [p for row in ids for p in range(len(row))]
    return PackedBatch(
        input_ids=torch.tensor(flat, dtype=torch.int64),
        positions=torch.tensor(positions, dtype=torch.int64),
        cu_seqlens=tuple(cu),
    )
