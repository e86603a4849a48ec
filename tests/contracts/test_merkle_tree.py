"""The Python Merkle tree against the contract's verification, byte for byte."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from settlement_kit import Settle

from contracts.merkle import MerkleError, MerkleTree, depth, leaf_hash, verify
from contracts.settlement import recover_work_receipt, sign_work_receipt, work_receipt_digest


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(keccak(text=f"leaf {i}")) for i in range(n)]


@pytest.mark.parametrize("count", [1, 2, 3, 1000, 1025])
def test_python_tree_proofs_verify_on_the_contract_and_fail_when_tampered(settle: Settle, count: int) -> None:
    tree = MerkleTree.build(leaves(count))
    assert tree.depth == depth(count)
    verify_leaf = settle.batches.functions.verifyLeaf
    indices = sorted({0, count // 2, count - 1, min(1, count - 1), max(count - 2, 0)})
    for i in indices:
        proof = tree.proof(i)
        assert verify(tree.root, count, i, tree.leaf(i), proof)
        assert verify_leaf(tree.root, count, i, tree.leaf(i), proof).call() is True
        # Every way to reuse the proof elsewhere fails on both sides alike.
        bad = [
            (tree.root, count, i, leaves(count + 1)[-1], proof),  # another leaf
            (tree.root, count, i + 1, tree.leaf(i), proof),  # another index (or past count)
            (tree.root, count * 4 + 1, i, tree.leaf(i), proof),  # a count of another depth
            (keccak(b"another root"), count, i, tree.leaf(i), proof),
            (tree.root, count, i, tree.leaf(i), proof[:-1] if proof else [b"\x00" * 32]),  # wrong length
            (tree.root, count, i, tree.leaf(i), [*proof, b"\x00" * 32]),  # longer proof
        ]
        for args in bad:
            assert verify(*args) is False
            assert verify_leaf(*args).call() is False


def test_a_padding_leaf_past_count_is_refused_though_its_path_hashes_to_the_root(settle: Settle) -> None:
    tree = MerkleTree.build(leaves(3))  # padded with one zero leaf at index 3
    proof = tree.levels[0][2], tree.levels[1][0]
    assert verify(tree.root, 4, 3, b"\x00" * 32, list(proof))  # a 4-leaf tree would accept it
    assert verify(tree.root, 3, 3, b"\x00" * 32, list(proof)) is False
    assert settle.batches.functions.verifyLeaf(tree.root, 3, 3, b"\x00" * 32, list(proof)).call() is False


def test_contract_leaf_hash_is_the_double_hashed_eip712_digest(settle: Settle) -> None:
    r = settle.work(1)[0]
    digest = work_receipt_digest(r, settle.chain_id, settle.batches.address)
    assert settle.batches.functions.hashLeaf(r.as_tuple()).call() == keccak(digest)
    assert leaf_hash(digest) == keccak(digest)
    # The leaf's preimage is exactly what the provider signs off-chain.
    sig = sign_work_receipt(settle.m.key("provider"), r, settle.chain_id, settle.batches.address)
    assert recover_work_receipt(r, sig, settle.chain_id, settle.batches.address) == settle.m.addr("provider")
    assert recover_work_receipt(r, sig, settle.chain_id, settle.escrow.address) != settle.m.addr("provider")


def test_tree_builder_refuses_empty_trees_bad_leaves_and_indices_outside() -> None:
    with pytest.raises(MerkleError):
        MerkleTree.build([])
    with pytest.raises(MerkleError):
        MerkleTree.build([b"short"])
    with pytest.raises(MerkleError):
        MerkleTree.build(leaves(3)).proof(3)
    with pytest.raises(MerkleError):
        leaf_hash(b"x" * 31)
    assert [depth(n) for n in (1, 2, 3, 4, 5, 1000, 1024, 1025)] == [0, 1, 2, 2, 3, 10, 10, 11]
    assert MerkleTree.build(leaves(1)).root == leaves(1)[0]
