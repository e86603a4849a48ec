// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Hearth job market
/// @notice Clients escrow payment for inference jobs, staked providers claim and deliver them
/// with signed receipts, verifiers challenge wrong receipts, and a committee of other staked
/// providers settles disputes by re-execution. All payouts are pull payments (`withdraw`).
///
/// @dev Storage holds one word per job: a 248-bit commitment to the full `Job` record plus its
/// status in the low byte. Every call that acts on a job takes the record as calldata and the
/// contract checks it against the commitment. Every event carries the fields it changed, so an
/// indexer (or a client reading logs) can always rebuild the current record. This keeps a whole
/// job's life well under 250k gas; the price is that callers must pass the record along.
///
/// Accepted risks: committee selection draws on `block.prevrandao`, which the block proposer
/// can bias by withholding a block; on a devnet or an L2 with a trusted sequencer this is
/// acceptable, and governance is the fallback when no majority forms.
interface IJobMarket {
    enum Status {
        None,
        Posted,
        Claimed,
        Delivered,
        Challenged,
        Finalized,
        Refunded
    }

    /// @notice The full record of a job; its hash is what storage commits to. The model's price
    /// is fixed when the job is posted, so a later price change never affects it.
    struct Job {
        address client;
        address provider;
        bytes32 modelId;
        bytes32 inputHash;
        uint96 maxPayment;
        uint96 pricePerUnit;
        uint96 payment;
        uint96 collateral;
        uint40 deadline;
        uint40 challengeEnd;
        Status status;
        bytes32 outputHash;
    }

    /// @notice What a client signs to have a job posted for it (EIP-712 `JobRequest`).
    struct JobRequest {
        address client;
        bytes32 modelId;
        bytes32 inputHash;
        uint96 maxPayment;
        uint40 deadline;
        uint256 nonce;
    }

    /// @notice An EIP-2612 permit to pull the escrow without a prior approval (optional).
    struct Permit {
        uint256 value;
        uint256 deadline;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice What a provider signs when it delivers (EIP-712 `Receipt`). Payment always goes to
    /// the job's provider, so a copied or front-run receipt cannot redirect it.
    struct Receipt {
        uint256 jobId;
        bytes32 outputHash;
        uint64 units;
        bytes32 modelHash;
        bytes32 runtimeHash;
        bytes32 gpuClass;
    }

    /// @notice Governance parameters.
    /// @dev Field order packs what `finalize` reads (treasury, fee) into one slot and what
    /// `claimJob` and `submitReceipt` read into another.
    struct Params {
        address treasury;
        uint16 feeBps;
        uint64 challengeBond;
        uint16 refundPenaltyBps;
        uint16 sampleRateBps;
        uint8 committeeSize;
        uint32 challengeWindow;
        uint32 commitPeriod;
        uint32 revealPeriod;
        uint96 claimCollateral;
        uint96 disputeSlash;
    }

    error UnknownJob(uint256 jobId);
    error JobMismatch(uint256 jobId);
    error WrongStatus(uint256 jobId, Status status);
    error ZeroPayment();
    error DeadlinePassed(uint256 deadline);
    error DeadlineNotPassed(uint256 jobId, uint256 deadline);
    error SignatureExpired(uint256 deadline);
    error InvalidSignature();
    error NotJobProvider(uint256 jobId, address signer);
    error ModelMismatch(uint256 jobId, bytes32 expected, bytes32 got);
    error ZeroUnits(uint256 jobId);
    error ChallengeWindowClosed(uint256 jobId);
    error ChallengeWindowOpen(uint256 jobId, uint256 challengeEnd);
    error ChallengerNotEligible(address challenger);
    error NotCommitteeMember(uint256 jobId, address voter);
    error AlreadyCommitted(uint256 jobId, address voter);
    error CommitPhaseOver(uint256 jobId);
    error RevealPhaseNotOpen(uint256 jobId);
    error RevealDoesNotMatchCommit(uint256 jobId, address voter);
    error AlreadyRevealed(uint256 jobId, address voter);
    error DisputeStillOpen(uint256 jobId);
    error DisputeNotEscalated(uint256 jobId);
    error NothingToWithdraw(address account);
    error TokenTransferShortfall(uint256 expected, uint256 received);
    error InvalidParameter();

    event JobPosted(
        uint256 indexed jobId,
        address indexed client,
        bytes32 indexed modelId,
        bytes32 inputHash,
        uint96 maxPayment,
        uint96 pricePerUnit,
        uint40 deadline,
        address relayer
    );
    event JobClaimed(uint256 indexed jobId, address indexed provider, uint96 collateral);
    event ReceiptSubmitted(
        uint256 indexed jobId,
        address indexed provider,
        bytes32 outputHash,
        uint64 units,
        bytes32 modelHash,
        bytes32 runtimeHash,
        bytes32 gpuClass,
        uint96 payment,
        uint40 challengeEnd
    );
    event JobChallenged(
        uint256 indexed jobId,
        address indexed challenger,
        uint96 bond,
        address[] committee,
        uint40 commitEnd,
        uint40 revealEnd
    );
    event VoteCommitted(uint256 indexed jobId, address indexed voter, bytes32 commitment);
    event VoteRevealed(uint256 indexed jobId, address indexed voter, bytes32 outputHash);
    /// @param providerWon whether the receipt stood
    /// @param escalated whether the committee failed to reach a majority and governance decides
    event DisputeResolved(
        uint256 indexed jobId,
        bool providerWon,
        bool escalated,
        bool byGovernance,
        uint256 slashed,
        uint40 challengeEnd
    );
    /// @notice Credits: `providerAmount` to the provider, `fee` to the treasury, `clientRefund`
    /// (unused escrow) back to the client. They add up to the job's maxPayment exactly.
    event JobFinalized(
        uint256 indexed jobId,
        address indexed provider,
        address indexed client,
        uint96 providerAmount,
        uint96 fee,
        uint96 clientRefund,
        address treasury
    );
    /// @param penalty staking tokens slashed from the claimer's collateral to the client
    event JobRefunded(uint256 indexed jobId, address indexed client, uint96 amount, uint256 penalty);
    /// @notice A credit outside finalization (challenge bonds).
    event BalanceCredited(address indexed account, uint256 amount, uint256 indexed jobId);
    event Withdrawn(address indexed account, address indexed to, uint256 amount);
    event ParamsSet(Params params);

    /// @notice Posts a job for the caller, pulling `maxPayment` into escrow (needs an allowance).
    function postJob(bytes32 modelId, bytes32 inputHash, uint96 maxPayment, uint40 deadline)
        external
        returns (uint256 jobId);

    /// @notice Posts a job signed by `request.client` (EIP-712), relayed by anyone. With a
    /// non-zero `permit.value` the escrow is approved by an EIP-2612 permit first; a permit that
    /// was already used (front-run) is tolerated when the allowance suffices.
    function postJobWithSig(JobRequest calldata request, bytes calldata signature, Permit calldata permit)
        external
        returns (uint256 jobId);

    /// @notice Claims a posted job for the caller, locking `claimCollateral` of its stake. Works
    /// while paused: the job is already escrowed, and finishing it is the safe way out.
    function claimJob(uint256 jobId, Job calldata job) external;

    /// @notice Submits the provider-signed receipt. Anyone may relay it; the signer must be the
    /// job's provider. Opens the challenge window.
    function submitReceipt(Job calldata job, Receipt calldata receipt, bytes calldata signature) external;

    /// @notice Challenges a delivered job within its window, posting `challengeBond`. The caller
    /// must be an active staked provider serving the model, other than the job's provider.
    function challenge(uint256 jobId, Job calldata job) external;

    /// @notice Commits a committee vote: keccak256(abi.encode(jobId, voter, outputHash, salt)).
    function commitVote(uint256 jobId, bytes32 commitment) external;

    /// @notice Reveals a committed vote during the reveal phase.
    function revealVote(uint256 jobId, bytes32 outputHash, bytes32 salt) external;

    /// @notice Settles a dispute after the reveal phase by majority of revealed votes. Without a
    /// strict majority the dispute is escalated to governance.
    function resolveDispute(uint256 jobId, Job calldata job) external;

    /// @notice Governance decision for an escalated dispute. Owner only.
    function resolveEscalated(uint256 jobId, Job calldata job, bool providerWon) external;

    /// @notice After the challenge window, credits provider, treasury and client. Anyone may call.
    function finalize(uint256 jobId, Job calldata job) external;

    /// @notice After the deadline of an undelivered job, refunds the client in full and slashes a
    /// penalty from the claimer's collateral to the client. Anyone may call.
    function refund(uint256 jobId, Job calldata job) external;

    /// @notice Pays out the caller's whole credited balance to `to`.
    function withdraw(address to) external returns (uint256 amount);

    function setParams(Params calldata params) external;
    function pause() external;
    function unpause() external;

    function jobStatus(uint256 jobId) external view returns (Status);
    function hashJob(Job calldata job) external pure returns (bytes32);
    function jobCount() external view returns (uint256);
    function balanceOf(address account) external view returns (uint256);
    function params() external view returns (Params memory);
    function committee(uint256 jobId) external view returns (address[] memory);
    function paymentToken() external view returns (address);
    function staking() external view returns (address);
    function registry() external view returns (address);
    function nonces(address owner) external view returns (uint256);
    function DOMAIN_SEPARATOR() external view returns (bytes32);
}
