// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IJobMarket} from "./IJobMarket.sol";

/// @title Hearth batch settlement (work side)
/// @notice Providers commit one Merkle root per batch of work receipts (`commitBatch`: one storage
/// word per batch) and quote their own price per model (bounded by a governance ceiling).
///
/// Leaves are `keccak256(abi.encode(d))` where `d` is the EIP-712 digest of the `WorkReceipt`
/// under this contract's domain (the very digest the provider signs off-chain): a leaf is the hash
/// of 32 bytes and an inner node the hash of 64, so no inner node passes as a leaf. The tree is
/// positional: leaves in order, padded with zero leaves to the next power of two, node =
/// keccak256(left ‖ right); a proof has exactly ceil(log2(count)) siblings and the index's bits
/// pick the side, so a proof names one index and that index is checked against `count`.
///
/// Any leaf can be questioned during the batch's challenge window:
/// - `demandLeaf` (anyone but the provider, posting `demandBond`): the leaf's data must be
///   revealed with its proof (`revealLeaf`) within `revealWindow`, else `settleWithheldLeaf`
///   treats it as fraud. A revealed leaf pays the demand bond to the provider.
/// - `challengeLeaf` (an active staked provider other than the batch's, posting `demandBond`,
///   with the leaf and its Merkle proof): opens a game of the shared `DisputeGame` library on
///   the leaf, exactly as `JobMarket.challenge` does for a job: a committee drawn from a block
///   hash fixed after the challenge (`drawLeafCommittee`, before `drawDeadline`), stake-weighted
///   from `Staking`'s eligible set for the leaf's model and the provider's GPU class, re-executes
///   the request and votes on (outputHash, units) by commit and reveal (`commitLeafVote`,
///   `revealLeafVote`) with member bonds locked in `Staking`; `resolveLeafDispute` (anyone) ends
///   it; without a quorum or a majority it escalates to governance (`resolveLeaf`), and past the
///   escalation deadline, or with no committee, it ends with the game's neutral default (the
///   receipt stands, the bond goes back). The game's ids are `leafDisputeId(batchId, index)` and
///   its events are `IJobMarket`'s (`JobChallenged`, `CommitteeDrawn`, `VoteCommitted`, ...,
///   `DisputeSettled`), emitted by this contract under that id.
///
/// Fraud proven by the game slashes `leafSlash` of the provider's stake through `Staking`
/// (jailing it); of the slash the challenger is credited `challengerRewardBps`, the committee's
/// majority the market's `committeeRewardBps` (capped so that both fit) and the treasury the rest
/// (a cheater's own sybil challenger never recovers the slash); the leaf's value plus
/// `penaltyBps` is refunded from the provider's escrow bond into the payer's deposit, and the
/// challenger's bond is credited back. A receipt upheld by the committee credits the bond to the
/// provider less the committee's share. Members' rewards and penalties are the game's. Credits
/// are withdrawn with `withdraw` (payment token) and `withdrawRewards` (staking token). A
/// withheld leaf (`settleWithheldLeaf`) has no known payer: it is slashed only, paid out at once.
///
/// Every commit extends the provider's stake lock in `Staking` to the end of the batch's
/// settlement horizon, so stake backing a challengeable batch cannot be withdrawn early.
///
/// Accepted risks: a leaf's `value` is not checked on-chain against the provider's quote (the
/// gateway values payment receipts at the on-chain quote, and the payer signs only what it
/// agreed to pay); `units` and the output are what a dispute decides. Parameter changes apply to batches
/// already committed (windows are read at each step): lengthening them can leave an older batch
/// challengeable past the stake lock its commit took, so governance lengthens windows only
/// together with a matching wait before relying on them.
interface IBatchSettlement {
    /// @notice A committed batch; its hash is the one word stored per batch.
    struct Batch {
        address provider;
        bytes32 root;
        uint32 count;
        uint64 units;
        uint96 value;
        uint40 committedAt;
    }

    /// @notice One unit of work (a leaf), as the provider signs it off-chain.
    struct WorkReceipt {
        bytes32 requestId;
        address payer;
        bytes32 modelId;
        bytes32 inputHash;
        bytes32 outputHash;
        uint64 units;
        uint96 value;
        bytes32 runtimeHash;
        bytes32 numericsClass;
    }

    enum LeafStatus {
        None,
        Demanded,
        Revealed,
        Disputed,
        Upheld,
        Fraud
    }

    /// @notice The state of a questioned leaf.
    /// @param deadline Demanded: reveal deadline; Revealed: end of the grace to challenge it;
    /// Disputed: the latest time the game can end in fraud (`_disputeDuration` after the challenge)
    struct LeafCase {
        LeafStatus status;
        address challenger;
        uint40 deadline;
        uint96 bond;
        address payer;
        uint96 value;
    }

    /// @notice Governance parameters. `resolveWindow`: how long after a challenge the game's
    /// voting may run, the committee's draw included (at least the market's commit and reveal
    /// periods; the draw closes `commitPeriod + revealPeriod` before it ends); a dispute's full
    /// length adds the market's `escalationPeriod` as of the last `setParams` (set them again after
    /// the market changes it).
    struct Params {
        address treasury;
        uint32 challengeWindow;
        uint32 revealWindow;
        uint32 resolveWindow;
        uint16 penaltyBps;
        uint16 challengerRewardBps;
        uint96 leafSlash;
        uint96 demandBond;
    }

    error EmptyBatch();
    error ProviderNotActive(address provider);
    error UnknownBatch(uint256 batchId);
    error BatchMismatch(uint256 batchId);
    error IndexOutOfRange(uint256 batchId, uint256 index, uint256 count);
    error InvalidProof(uint256 batchId, uint256 index);
    error ChallengeWindowClosed(uint256 batchId, uint256 challengeEnd);
    error WrongLeafStatus(uint256 batchId, uint256 index, LeafStatus status);
    error RevealWindowClosed(uint256 batchId, uint256 index, uint256 deadline);
    error RevealWindowOpen(uint256 batchId, uint256 index, uint256 deadline);
    /// @notice The leaf's committee can no longer be drawn (see `drawDeadline`).
    error DrawWindowClosed(uint256 batchId, uint256 index, uint256 deadline);
    error NotEligible(address caller);
    error PriceAboveCeiling(bytes32 modelId, uint256 price, uint256 ceiling);
    error ModelNotServed(address provider, bytes32 modelId);
    error TokenTransferShortfall(uint256 expected, uint256 received);
    error InvalidParameter();

    event BatchCommitted(
        uint256 indexed batchId,
        address indexed provider,
        bytes32 root,
        uint32 count,
        uint64 units,
        uint96 value,
        uint40 committedAt,
        uint40 challengeEnd
    );
    event LeafDemanded(
        uint256 indexed batchId, uint256 indexed index, address indexed challenger, uint96 bond, uint40 deadline
    );
    /// @notice A leaf's full data, published.
    event LeafRevealed(uint256 indexed batchId, uint256 indexed index, WorkReceipt leaf, uint40 challengeDeadline);
    event LeafChallenged(
        uint256 indexed batchId,
        uint256 indexed index,
        address indexed challenger,
        address payer,
        uint96 value,
        bytes32 outputHash,
        uint96 bond,
        uint40 deadline
    );
    /// @param byDefault whether no decision came in time (neutral default: the receipt stands,
    /// the challenger's bond goes back)
    event LeafUpheld(
        uint256 indexed batchId, uint256 indexed index, address indexed provider, uint256 bondToProvider, bool byDefault
    );
    /// @param withheld whether the leaf was never revealed when demanded
    event LeafFraudProven(
        uint256 indexed batchId,
        uint256 indexed index,
        address indexed provider,
        address challenger,
        address payer,
        uint256 refunded,
        uint256 slashed,
        uint256 challengerReward,
        bool withheld
    );
    /// @notice The leaf dispute's committee reached no verdict: governance may decide it
    /// (`resolveLeaf`) until `escalationEnd`, then the neutral default applies.
    event LeafDisputeEscalated(uint256 indexed batchId, uint256 indexed index, uint40 escalationEnd);
    // The dispute game's events (`DisputeGame` emits `IJobMarket`'s, from this contract, with
    // `jobId` = `leafDisputeId(batchId, index)`); declared again so that this ABI decodes them.
    /// @notice A leaf dispute's game opened (see `IJobMarket.JobChallenged`).
    event JobChallenged(uint256 indexed jobId, address indexed challenger, uint96 bond, uint40 drawBlock);
    /// @notice A leaf dispute's committee was drawn (empty: too few eligible, neutral default).
    event CommitteeDrawn(uint256 indexed jobId, address[] seats, uint40 commitEnd, uint40 revealEnd);
    /// @notice A member committed its vote on a leaf, locking `bond` of its stake.
    event VoteCommitted(uint256 indexed jobId, address indexed voter, bytes32 commitment, uint96 bond);
    /// @notice A member revealed its vote on a leaf's (output, units).
    event VoteRevealed(uint256 indexed jobId, address indexed voter, bytes32 outputHash, uint64 units);
    /// @notice A member's share or penalty in a settled leaf dispute.
    event MemberSettled(
        uint256 indexed jobId, address indexed member, uint8 seats, uint256 rewardUsd, uint256 rewardStake, uint256 penalty
    );
    /// @notice Where a leaf dispute's bond and slash went.
    event DisputeSettled(
        uint256 indexed jobId,
        uint256 challengerReward,
        uint256 committeeRewardUsd,
        uint256 committeeRewardStake,
        uint256 treasuryStake
    );
    /// @notice A payment-token credit (bond, committee share) withdrawable with `withdraw`.
    event BalanceCredited(address indexed account, uint256 amount, uint256 indexed jobId);
    /// @notice A staking-token credit (share of a slash) withdrawable with `withdrawRewards`.
    event RewardCredited(address indexed account, uint256 amount, uint256 indexed jobId);
    /// @notice A payment-token credit was paid out.
    event Withdrawn(address indexed account, address indexed to, uint256 amount);
    /// @notice A staking-token credit was paid out.
    event RewardsWithdrawn(address indexed account, address indexed to, uint256 amount);
    event PriceQuoted(address indexed provider, bytes32 indexed modelId, uint256 price);
    event PriceCeilingSet(bytes32 indexed modelId, uint256 ceiling);
    event ParamsSet(Params params);

    /// @notice Commits a batch for the caller, an active provider. Returns its id.
    function commitBatch(bytes32 root, uint32 count, uint64 units, uint96 value) external returns (uint256 batchId);

    /// @notice Demands a leaf's data within the batch's challenge window (posting `demandBond`).
    function demandLeaf(uint256 batchId, Batch calldata batch, uint256 index) external;
    /// @notice Publishes a demanded leaf with its proof, before the reveal deadline. Anyone may.
    function revealLeaf(
        uint256 batchId,
        Batch calldata batch,
        uint256 index,
        WorkReceipt calldata leaf,
        bytes32[] calldata proof
    ) external;
    /// @notice After the reveal deadline of a demanded, unrevealed leaf: fraud. Anyone may call.
    function settleWithheldLeaf(uint256 batchId, Batch calldata batch, uint256 index) external;
    /// @notice Disputes a leaf (its data and proof) within the challenge window, or within the
    /// grace after it was revealed on demand.
    function challengeLeaf(
        uint256 batchId,
        Batch calldata batch,
        uint256 index,
        WorkReceipt calldata leaf,
        bytes32[] calldata proof
    ) external;
    /// @notice Draws the leaf dispute's committee (anyone; see `IJobMarket.drawCommittee`), no
    /// later than `drawDeadline(batchId, index)`.
    function drawLeafCommittee(uint256 batchId, uint256 index) external;
    /// @notice A committee member commits its vote, `keccak256(abi.encode(leafDisputeId(batchId,
    /// index), member, outputHash, units, salt))`, locking its bond in `Staking`.
    function commitLeafVote(uint256 batchId, uint256 index, bytes32 commitment) external;
    /// @notice A committee member reveals its vote in the reveal phase.
    function revealLeafVote(uint256 batchId, uint256 index, bytes32 outputHash, uint64 units, bytes32 salt)
        external;
    /// @notice Ends a leaf dispute when the game can end (see `IJobMarket.resolveDispute`): the
    /// committee's verdict, escalation to governance (`LeafDisputeEscalated`), or the neutral
    /// default (no committee drawn in time, none eligible, or escalation deadline passed).
    function resolveLeafDispute(uint256 batchId, Batch calldata batch, uint256 index) external;
    /// @notice Governance's decision of an escalated leaf dispute, before its escalation deadline.
    function resolveLeaf(uint256 batchId, Batch calldata batch, uint256 index, bool fraud) external;
    /// @notice Withdraws the caller's payment-token credits (bonds, committee shares) to `to`.
    function withdraw(address to) external returns (uint256 amount);
    /// @notice Withdraws the caller's staking-token credits (slash shares) to `to`.
    function withdrawRewards(address to) external returns (uint256 amount);

    /// @notice Quotes the caller's price per unit for a model it serves (at most the ceiling).
    function quotePrice(bytes32 modelId, uint256 price) external;
    /// @notice Sets the highest price a provider may quote for a model (0: none may). Owner only.
    function setPriceCeiling(bytes32 modelId, uint256 ceiling) external;
    function setParams(Params calldata params) external;

    function priceOf(address provider, bytes32 modelId) external view returns (uint256);
    function priceCeiling(bytes32 modelId) external view returns (uint256);
    function batchCount() external view returns (uint256);
    function batchHash(uint256 batchId) external view returns (bytes32);
    function hashBatch(Batch calldata batch) external pure returns (bytes32);
    function leafCase(uint256 batchId, uint256 index) external view returns (LeafCase memory);
    /// @notice The leaf hash of a work receipt (double-hashed EIP-712 digest).
    function hashLeaf(WorkReceipt calldata leaf) external view returns (bytes32);
    /// @notice Whether `proof` proves `leaf` at `index` of a tree of `count` leaves with `root`.
    function verifyLeaf(bytes32 root, uint256 count, uint256 index, bytes32 leaf, bytes32[] calldata proof)
        external
        pure
        returns (bool);
    /// @notice challengeWindow + 2 x revealWindow + dispute duration: how long after a commit a
    /// batch can still cost its provider.
    function settlementHorizon() external view returns (uint256);
    /// @notice The dispute game's id for a leaf: `batchId << 32 | index`.
    function leafDisputeId(uint256 batchId, uint256 index) external pure returns (uint256);
    /// @notice A leaf dispute's game state (as `IJobMarket.dispute`).
    function leafDispute(uint256 batchId, uint256 index) external view returns (IJobMarket.DisputeView memory);
    /// @notice A leaf dispute's committee seats (empty before the draw).
    function leafCommittee(uint256 batchId, uint256 index) external view returns (address[] memory);
    /// @notice A committee member's state in a leaf dispute.
    function leafMember(uint256 batchId, uint256 index, address account)
        external
        view
        returns (IJobMarket.MemberView memory);
    /// @notice The last time a leaf dispute's committee can be drawn (0 when none is open).
    function drawDeadline(uint256 batchId, uint256 index) external view returns (uint256);
    /// @notice Payment-token credits `account` can withdraw.
    function balanceOf(address account) external view returns (uint256);
    /// @notice Staking-token credits `account` can withdraw.
    function rewardOf(address account) external view returns (uint256);
    /// @notice Until when `provider` has a batch that can still cost it (its stake lock).
    function lockedUntil(address provider) external view returns (uint256);
    function params() external view returns (Params memory);
    function escrow() external view returns (address);
    function staking() external view returns (address);
    function market() external view returns (address);
    function DOMAIN_SEPARATOR() external view returns (bytes32);
}
