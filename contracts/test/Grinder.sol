// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IJobMarket} from "../src/interfaces/IJobMarket.sol";
import {IBatchSettlement} from "../src/interfaces/IBatchSettlement.sol";

/// @title Grinder
/// @notice Test only. A staked provider that is a contract and tries to capture a committee by
/// retrying the draw: in one transaction it challenges and then inspects (or draws) the
/// committee, so that it could revert unless its sybils hold a majority and retry next block.
/// Against a market that draws inside `challenge` (the vulnerable version) the committee is
/// known in the challenge transaction; against this market it is not.
contract Grinder {
    error NotOwner(address caller);

    address private immutable _owner;

    constructor() {
        _owner = msg.sender;
    }

    /// @notice Calls `target` with `data` as this contract (register, stake, approve...), bubbling
    /// a revert. Owner only.
    function execute(address target, bytes calldata data) external returns (bytes memory result) {
        require(msg.sender == _owner, NotOwner(msg.sender));
        bool ok;
        (ok, result) = target.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 32), mload(result))
            }
        }
    }

    /// @notice Challenges `jobId` and returns the committee seats visible in the same transaction.
    function challengeAndInspect(IJobMarket market, uint256 jobId, IJobMarket.Job calldata job)
        external
        returns (uint256 seats)
    {
        require(msg.sender == _owner, NotOwner(msg.sender));
        market.challenge(jobId, job);
        seats = market.committee(jobId).length;
    }

    /// @notice Challenges `jobId` and tries to draw its committee in the same transaction.
    function challengeAndDraw(IJobMarket market, uint256 jobId, IJobMarket.Job calldata job) external {
        require(msg.sender == _owner, NotOwner(msg.sender));
        market.challenge(jobId, job);
        market.drawCommittee(jobId);
    }

    /// @notice Challenges a batch leaf and returns the committee seats visible in the same transaction.
    function challengeLeafAndInspect(
        IBatchSettlement settlement,
        uint256 batchId,
        IBatchSettlement.Batch calldata batch,
        uint256 index,
        IBatchSettlement.WorkReceipt calldata leaf,
        bytes32[] calldata proof
    ) external returns (uint256 seats) {
        require(msg.sender == _owner, NotOwner(msg.sender));
        settlement.challengeLeaf(batchId, batch, index, leaf, proof);
        seats = settlement.leafCommittee(batchId, index).length;
    }

    /// @notice Challenges a batch leaf and tries to draw its committee in the same transaction.
    function challengeLeafAndDraw(
        IBatchSettlement settlement,
        uint256 batchId,
        IBatchSettlement.Batch calldata batch,
        uint256 index,
        IBatchSettlement.WorkReceipt calldata leaf,
        bytes32[] calldata proof
    ) external {
        require(msg.sender == _owner, NotOwner(msg.sender));
        settlement.challengeLeaf(batchId, batch, index, leaf, proof);
        settlement.drawLeafCommittee(batchId, index);
    }
}
