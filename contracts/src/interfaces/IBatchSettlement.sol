// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

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
/// - `challengeLeaf` (an active staked provider other than the batch's, posting `demandBond`):
///   opens a dispute on the revealed leaf. Today `resolveLeaf` (governance) decides it, and past
///   `resolveWindow` anyone settles it with the neutral default (`expireLeafDispute`: the receipt
///   stands, the bond goes back). On merge with the shared dispute game, the committee's vote
///   replaces governance through the internal `_openLeafDispute` / `_resolveLeaf` hooks.
///
/// Fraud slashes `leafSlash` of the provider's stake through `Staking` (jailing it), pays the
/// challenger `challengerRewardBps` of what was slashed and the rest to the treasury (a cheater's
/// own sybil challenger never recovers the slash), refunds the leaf's value plus `penaltyBps` from
/// the provider's escrow bond into the payer's deposit (a withheld leaf has no known payer: it is
/// slashed only), and returns the challenger's bond.
///
/// Every commit extends the provider's stake lock in `Staking` to the end of the batch's
/// settlement horizon, so stake backing a challengeable batch cannot be withdrawn early.
///
/// Accepted risks: a leaf's `value` is not checked on-chain against the provider's quote (the
/// gateway values payment receipts at the on-chain quote, and the payer signs only what it
/// agreed to pay); `units` and the output are what a dispute decides. Until the shared dispute
/// game is merged, leaf disputes are decided by governance. Parameter changes apply to batches
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
    /// Disputed: resolution deadline
    struct LeafCase {
        LeafStatus status;
        address challenger;
        uint40 deadline;
        uint96 bond;
        address payer;
        uint96 value;
    }

    /// @notice Governance parameters.
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
    error DisputeOpen(uint256 batchId, uint256 index, uint256 deadline);
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
    /// @notice Decides a leaf dispute. Owner only until the shared dispute game is merged.
    function resolveLeaf(uint256 batchId, Batch calldata batch, uint256 index, bool fraud) external;
    /// @notice Past the resolution deadline, settles an undecided dispute with the neutral default.
    function expireLeafDispute(uint256 batchId, Batch calldata batch, uint256 index) external;

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
    /// @notice Until when `provider` has a batch that can still cost it (its stake lock).
    function lockedUntil(address provider) external view returns (uint256);
    function params() external view returns (Params memory);
    function escrow() external view returns (address);
    function staking() external view returns (address);
    function market() external view returns (address);
    function DOMAIN_SEPARATOR() external view returns (bytes32);
}
