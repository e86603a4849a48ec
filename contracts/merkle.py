"""The positional Merkle tree of a work-receipt batch, byte for byte as ``BatchSettlement`` checks it.

* A leaf is ``keccak256(d)`` where ``d`` is the 32-byte EIP-712 digest of the ``WorkReceipt``
  (``keccak256(abi.encode(bytes32))`` is the hash of those 32 bytes): a leaf hashes 32 bytes and
  an inner node 64, so an inner node never passes as a leaf.
* Leaves stay in their order and are padded with zero leaves to the next power of two; an inner
  node is ``keccak256(left || right)`` (positional, not sorted).
* A proof is exactly ``ceil(log2(count))`` siblings, bottom up; bit ``i`` of the index says the
  node is the right child at level ``i``. A proof therefore names one index, which the contract
  checks against the batch's ``count``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils import keccak

from contracts.errors import ContractsError

ZERO_LEAF = b"\x00" * 32


class MerkleError(ContractsError, ValueError):
    """An empty tree, a malformed leaf or an index outside the tree."""


def leaf_hash(digest: bytes) -> bytes:
    """The leaf of a work receipt whose EIP-712 digest is ``digest``."""
    if len(digest) != 32:
        raise MerkleError(f"a leaf digest is 32 bytes, got {len(digest)}")
    return bytes(keccak(digest))


def depth(count: int) -> int:
    """ceil(log2(count)): the number of siblings in every proof of a tree of ``count`` leaves."""
    if count < 1:
        raise MerkleError("a batch has at least one leaf")
    return (count - 1).bit_length()


def hash_pair(left: bytes, right: bytes) -> bytes:
    return bytes(keccak(left + right))


@dataclass(frozen=True)
class MerkleTree:
    """A built tree: ``levels[0]`` are the padded leaves, ``levels[-1]`` is ``[root]``."""

    count: int
    levels: tuple[tuple[bytes, ...], ...]

    @classmethod
    def build(cls, leaves: Sequence[bytes]) -> MerkleTree:
        count = len(leaves)
        d = depth(count)
        for i, lf in enumerate(leaves):
            if len(lf) != 32:
                raise MerkleError(f"leaf {i} is {len(lf)} bytes, not 32")
        level = list(leaves) + [ZERO_LEAF] * ((1 << d) - count)
        levels = [tuple(level)]
        while len(level) > 1:
            level = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            levels.append(tuple(level))
        return cls(count, tuple(levels))

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    @property
    def depth(self) -> int:
        return len(self.levels) - 1

    def leaf(self, index: int) -> bytes:
        self._check(index)
        return self.levels[0][index]

    def proof(self, index: int) -> list[bytes]:
        """The siblings of leaf ``index``, bottom up."""
        self._check(index)
        out = []
        for level in self.levels[:-1]:
            out.append(level[index ^ 1])
            index >>= 1
        return out

    def _check(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise MerkleError(f"index {index} outside a batch of {self.count}")


def verify(root: bytes, count: int, index: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """The contract's check: index < count, proof length == depth(count), path hashes to root."""
    if count < 1 or not 0 <= index < count or len(proof) != depth(count):
        return False
    node = leaf
    for i, sibling in enumerate(proof):
        node = hash_pair(node, sibling) if (index >> i) & 1 == 0 else hash_pair(sibling, node)
    return node == root
