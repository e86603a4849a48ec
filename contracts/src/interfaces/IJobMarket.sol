// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Hearth job market
/// @notice Clients escrow payment for inference jobs, staked providers claim and deliver them
/// with signed receipts, verifiers challenge wrong receipts, and a bonded committee of other
/// staked providers settles each dispute by re-execution. All payouts are pull payments:
/// payment-token credits (`balanceOf`, `withdraw`) and staking-token rewards (`rewardOf`,
/// `withdrawRewards`).
///
/// @dev Storage holds one word per job: a 248-bit commitment to the full `Job` record plus its
/// status in the low byte. Every call that acts on a job takes the record as calldata and the
/// contract checks it against the commitment.
///
/// Rebuilding a job record from events (what `bindings.apply_job_event` and the indexer do):
/// - `JobPosted`: a new record: client, modelId, inputHash, maxPayment, pricePerUnit, deadline,
///   treasury, feeBps from the event; `challengeEnd` = the event's `challengeWindow` (a
///   duration until delivery); every other field zero; status Posted.
/// - `JobClaimed`: provider, collateral, claimExpiry; status Claimed.
/// - `ClaimReleased`: provider = 0, collateral = 0, claimExpiry = 0; status Posted.
/// - `ReceiptSubmitted`: outputHash, units, gpuClass, payment, challengeEnd (now a timestamp);
///   status Delivered.
/// - `JobChallenged`: status Challenged.
/// - `DisputeResolved`: outcome ProviderWon: status Delivered, challengeEnd from the event;
///   ProviderLost or Neutral: status Refunded; Escalated: unchanged.
/// - `JobFinalized`: status Finalized (the storage word is cleared).
/// - `JobRefunded`: status Refunded.
///
/// The dispute game (`DisputeGame` library): a challenge only records the dispute; its
/// committee is drawn by `drawCommittee` (anyone) from the hash of block
/// `challengeBlock + DRAW_DELAY`, which did not exist when the challenge was sent, so no one
/// can retry a draw. Seats are drawn independently, weighted by stake, from the eligible set of
/// the receipt's (model, numerics class) without the two parties (see `IStaking`). Members
/// commit keccak256(abi.encode(jobId, member, outputHash, units, salt)) and reveal; both the
/// output and the units must equal the receipt's for a vote to uphold it. See `resolveDispute`
/// for the outcomes and `DisputeSettled` for the money.
///
/// Pausing stops new jobs only. Claims, delivery, challenges, draws, votes, settlement,
/// refunds and withdrawals all keep working, and no window is stopped or extended, so a pause
/// favours neither a provider nor a challenger.
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

    /// @notice How a dispute ended (or that it was escalated to governance).
    enum Outcome {
        None,
        ProviderWon,
        ProviderLost,
        Neutral,
        Escalated
    }

    /// @notice A dispute's phase.
    enum Phase {
        None,
        AwaitingDraw,
        NoCommittee,
        Voting,
        Escalated,
        Settled
    }

    /// @notice The full record of a job; its hash is what storage commits to. Terms are fixed
    /// at posting: the model's price, the fee, the treasury and the challenge window.
    /// @param maxPayment payment-token wei escrowed by the client
    /// @param pricePerUnit payment-token wei per unit, the model's price at posting
    /// @param payment what the receipt is worth: min(maxPayment, units x pricePerUnit)
    /// @param collateral staking-token wei locked at claim (scales with maxPayment)
    /// @param deadline unix seconds; delivery is accepted while block.timestamp <= deadline
    /// @param challengeEnd before delivery: the challenge window in seconds; after: the unix
    /// second at which the window closes (challenges while block.timestamp < challengeEnd)
    /// @param units the units the receipt reported
    /// @param gpuClass the receipt's numerics class
    /// @param treasury where the fee goes, fixed at posting
    /// @param feeBps the fee in basis points of the payment, fixed at posting
    /// @param claimExpiry unix seconds; a claim not delivered by then can be released by anyone
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
        uint64 units;
        bytes32 gpuClass;
        address treasury;
        uint16 feeBps;
        uint40 claimExpiry;
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

    /// @notice Governance parameters. Changes go through `proposeParams` and take effect
    /// `PARAMS_DELAY` seconds later (`applyParams`). A job keeps the fee, treasury and challenge
    /// window of its posting, its collateral of its claim, and a dispute the committee terms of
    /// its challenge.
    /// @param treasury receives fees, the burned share of slashes and unclaimed rewards
    /// @param feeBps fee in basis points of a job's payment
    /// @param challengeWindow seconds after delivery during which a receipt can be challenged
    /// @param refundPenaltyBps basis points of the collateral slashed to the client when a claim
    /// expires or a claimed job passes its deadline undelivered
    /// @param sampleRateBps basis points of receipts each verifier re-executes (off-chain duty)
    /// @param committeeSize seats per committee: odd, between MIN_COMMITTEE and MAX_COMMITTEE
    /// @param claimCollateral staking-token wei locked per claim, plus the per-payment part
    /// @param collateralPerPaymentWei staking-token wei locked per payment-token wei of maxPayment
    /// @param claimTimeout seconds after a claim by which it must be delivered
    /// @param commitPeriod seconds from the draw during which members commit
    /// @param revealPeriod seconds after the commit phase during which members reveal
    /// @param challengeBond payment-token wei a challenger posts
    /// @param memberBond staking-token wei locked per seat when a member commits
    /// @param memberPenaltyBps basis points of memberBond slashed per seat for not revealing or
    /// voting against the final majority
    /// @param challengerRewardBps basis points of the provider's slash paid to the challenger
    /// @param committeeRewardBps basis points of the loser's slash (or bond) shared by the majority
    /// @param escalationPeriod seconds governance has to decide an escalated dispute
    /// @param maxChallengerReward cap on the challenger's reward, staking-token wei
    struct Params {
        address treasury;
        uint16 feeBps;
        uint32 challengeWindow;
        uint16 refundPenaltyBps;
        uint16 sampleRateBps;
        uint8 committeeSize;
        uint96 claimCollateral;
        uint64 collateralPerPaymentWei;
        uint32 claimTimeout;
        uint32 commitPeriod;
        uint32 revealPeriod;
        uint64 challengeBond;
        uint96 memberBond;
        uint16 memberPenaltyBps;
        uint16 challengerRewardBps;
        uint16 committeeRewardBps;
        uint32 escalationPeriod;
        uint96 maxChallengerReward;
    }

    /// @notice A dispute, as `dispute(jobId)` returns it.
    /// @param drawBlock the block whose hash seeds the draw; the draw is possible in blocks
    /// drawBlock + 1 .. drawBlock + 256
    /// @param challengedAt unix seconds of the challenge
    /// @param commitEnd commits while block.timestamp < commitEnd
    /// @param revealEnd reveals while commitEnd <= block.timestamp < revealEnd
    /// @param escalationEnd governance decides while block.timestamp < escalationEnd; from then
    /// on anyone settles it neutrally
    /// @param agreeSeats revealed seats whose vote equals the receipt's (output, units)
    /// @param disagreeSeats revealed seats whose vote differs
    struct DisputeView {
        address challenger;
        address provider;
        Phase phase;
        uint64 bond;
        uint40 drawBlock;
        uint40 challengedAt;
        uint40 commitEnd;
        uint40 revealEnd;
        uint40 escalationEnd;
        uint8 seats;
        uint8 agreeSeats;
        uint8 disagreeSeats;
        bytes32 modelId;
        bytes32 gpuClass;
        bytes32 outputHash;
        uint64 units;
    }

    /// @notice A committee member's state in a dispute.
    struct MemberView {
        uint8 seats;
        bool committed;
        bool revealed;
        bool agreed;
        uint96 bondLocked;
    }

    // ---------------------------------------------------------------- errors of this contract

    /// @notice No job with this id (0, or above `jobCount`).
    error UnknownJob(uint256 jobId);
    /// @notice The record passed does not hash to the stored commitment.
    error JobMismatch(uint256 jobId);
    /// @notice The job (or the record passed) is not in the status the call needs.
    error WrongStatus(uint256 jobId, Status status);
    /// @notice Posting with maxPayment = 0.
    error ZeroPayment();
    /// @notice The deadline (unix seconds) has passed (or, at posting, is not in the future).
    error DeadlinePassed(uint256 deadline);
    /// @notice `refund` before the deadline: possible once block.timestamp > deadline.
    error DeadlineNotPassed(uint256 jobId, uint256 deadline);
    /// @notice A job request or receipt signature that is not the client's (or the provider's), EOA or ERC-1271.
    error InvalidSignature();
    /// @notice A receipt naming another model than the job's.
    error ModelMismatch(uint256 jobId, bytes32 expected, bytes32 got);
    /// @notice A receipt reporting zero units.
    error ZeroUnits(uint256 jobId);
    /// @notice Delivery after the claim expired (block.timestamp > claimExpiry).
    error ClaimExpired(uint256 jobId, uint256 claimExpiry);
    /// @notice `releaseClaim` while block.timestamp <= claimExpiry.
    error ClaimNotExpired(uint256 jobId, uint256 claimExpiry);
    /// @notice `challenge` once block.timestamp >= challengeEnd.
    error ChallengeWindowClosed(uint256 jobId);
    /// @notice `finalize` while block.timestamp < challengeEnd (unix seconds).
    error ChallengeWindowOpen(uint256 jobId, uint256 challengeEnd);
    /// @notice The challenger is the provider, or not an eligible provider of the model.
    error ChallengerNotEligible(address challenger);
    /// @notice `drawCommittee` before block drawBlock + 1.
    error DrawNotReady(uint256 jobId, uint256 drawBlock);
    /// @notice `drawCommittee` after block drawBlock + 256: the seed is gone; `resolveDispute`
    /// settles the dispute neutrally.
    error DrawExpired(uint256 jobId, uint256 drawBlock);
    /// @notice A call that needs the dispute in another phase.
    error WrongPhase(uint256 jobId, Phase phase);
    /// @notice A commit or reveal by an account holding no seat on the dispute's committee.
    error NotCommitteeMember(uint256 jobId, address voter);
    /// @notice A second commit by the same member.
    error AlreadyCommitted(uint256 jobId, address voter);
    /// @notice A commit once block.timestamp >= commitEnd (unix seconds).
    error CommitPhaseOver(uint256 jobId, uint256 commitEnd);
    /// @notice A reveal outside commitEnd <= block.timestamp < revealEnd (unix seconds).
    error RevealPhaseNotOpen(uint256 jobId, uint256 commitEnd, uint256 revealEnd);
    /// @notice A reveal whose (output, units, salt) does not hash to the member's commitment, or without a commitment.
    error RevealDoesNotMatchCommit(uint256 jobId, address voter);
    /// @notice A second reveal by the same member.
    error AlreadyRevealed(uint256 jobId, address voter);
    /// @notice `resolveDispute` before the dispute can end: `until` is the unix second (or, for
    /// an undrawn dispute, the block number after which the draw expires).
    error DisputeStillOpen(uint256 jobId, uint256 until);
    /// @notice `resolveEscalated` for a dispute that is not escalated.
    error DisputeNotEscalated(uint256 jobId);
    /// @notice `resolveEscalated` at or after the escalation deadline.
    error EscalationClosed(uint256 jobId, uint256 escalationEnd);
    /// @notice `withdraw` or `withdrawRewards` with a zero credit.
    error NothingToWithdraw(address account);
    /// @notice A payment token that delivered less than transferred (fee-on-transfer): refused.
    error TokenTransferShortfall(uint256 expected, uint256 received);
    /// @notice Parameters out of range (see `Params`; committeeSize odd in [MIN_COMMITTEE, MAX_COMMITTEE], reward shares <= 100%).
    error InvalidParameter();
    /// @notice `applyParams` with no proposal pending, or with parameters other than the proposal's.
    error NoPendingParams();
    /// @notice `applyParams` before block.timestamp >= effectiveAt.
    error ParamsNotReady(uint256 effectiveAt);
    /// @notice `renounceOwnership` is disabled: disputes and parameters need governance to exist.
    error OwnershipCannotBeRenounced();

    // ---------------------------------------------------------------- errors of the contracts it calls

    /// @notice From `IModelRegistry.activePrice` (posting for an unknown or inactive model).
    error UnknownModel(bytes32 modelId);
    /// @notice From `IModelRegistry.checkReceipt`.
    error RuntimeNotListed(bytes32 modelId, bytes32 runtimeHash);
    /// @notice From `IModelRegistry.checkReceipt`.
    error NumericsClassNotListed(bytes32 gpuClass);
    /// @notice From `IStaking` (claim or commit without enough free stake).
    error InsufficientFreeStake(address provider, uint256 requested, uint256 free);
    /// @notice From `IStaking.lockCollateral` (claimer not eligible).
    error ProviderNotActive(address provider);
    /// @notice From `IStaking.lockCollateral` (claimer does not serve the model).
    error ModelNotServed(address provider, bytes32 modelId);
    /// @notice From `IStaking` (unlocking more than is locked; never expected).
    error CollateralUnderflow(address provider, uint256 amount, uint256 locked);
    /// @notice Posting while paused.
    error EnforcedPause();
    /// @notice `pause` while paused, or `unpause` while not paused.
    error ExpectedPause();
    /// @notice OpenZeppelin `ERC20` (the payment token): balance too low for the escrow or bond.
    error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
    /// @notice OpenZeppelin `ERC20` (the payment token): allowance too low for the escrow or bond.
    error ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed);

    // ---------------------------------------------------------------- events

    /// @param challengeWindow seconds, fixed for this job
    /// @param relayer the account that sent the transaction (the client, or a relayer)
    event JobPosted(
        uint256 indexed jobId,
        address indexed client,
        bytes32 indexed modelId,
        bytes32 inputHash,
        uint96 maxPayment,
        uint96 pricePerUnit,
        uint40 deadline,
        address relayer,
        address treasury,
        uint16 feeBps,
        uint32 challengeWindow
    );
    /// @param collateral staking-token wei locked
    /// @param claimExpiry unix seconds; delivery after it is refused and anyone may release the claim
    event JobClaimed(uint256 indexed jobId, address indexed provider, uint96 collateral, uint40 claimExpiry);
    /// @notice An expired claim was released: the job is Posted again.
    /// @param penalty staking-token wei slashed from the collateral to the client
    event ClaimReleased(uint256 indexed jobId, address indexed provider, uint256 penalty);
    /// @notice A receipt was accepted; the challenge window runs while block.timestamp < challengeEnd.
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
    /// @param drawBlock the block whose hash will seed the committee
    event JobChallenged(uint256 indexed jobId, address indexed challenger, uint96 bond, uint40 drawBlock);
    /// @notice The committee was drawn. `seats` lists one address per seat (a member drawn
    /// twice holds two seats and votes with both); empty when too few providers were eligible
    /// (the dispute then settles neutrally).
    event CommitteeDrawn(uint256 indexed jobId, address[] seats, uint40 commitEnd, uint40 revealEnd);
    /// @notice A member committed; `bond` staking-token wei of its stake are locked until the dispute settles.
    event VoteCommitted(uint256 indexed jobId, address indexed voter, bytes32 commitment, uint96 bond);
    /// @notice A member revealed its vote on (output, units).
    event VoteRevealed(uint256 indexed jobId, address indexed voter, bytes32 outputHash, uint64 units);
    /// @param slashed staking-token wei actually slashed from the provider
    /// @param challengeEnd for ProviderWon, the new window end (now: finalize at once)
    /// @param escalationEnd for Escalated, the unix second until which governance may decide
    event DisputeResolved(
        uint256 indexed jobId,
        Outcome outcome,
        bool byGovernance,
        uint256 slashed,
        uint40 challengeEnd,
        uint40 escalationEnd
    );
    /// @notice A committee member's settlement: `reward` shares in each token, `penalty`
    /// staking-token wei actually slashed.
    event MemberSettled(
        uint256 indexed jobId, address indexed member, uint8 seats, uint256 rewardUsd, uint256 rewardStake, uint256 penalty
    );
    /// @notice Where a dispute's money went (besides the client's refund and member rewards):
    /// the challenger's bond back or to the provider, the challenger's reward, the treasury's share.
    event DisputeSettled(
        uint256 indexed jobId,
        uint256 challengerReward,
        uint256 committeeRewardUsd,
        uint256 committeeRewardStake,
        uint256 treasuryStake
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
    /// @param penalty staking-token wei slashed from the claimer's collateral to the client
    event JobRefunded(uint256 indexed jobId, address indexed client, uint96 amount, uint256 penalty);
    /// @notice A payment-token credit outside finalization (bonds, committee rewards).
    event BalanceCredited(address indexed account, uint256 amount, uint256 indexed jobId);
    /// @notice A staking-token credit (challenger and committee rewards, treasury share).
    event RewardCredited(address indexed account, uint256 amount, uint256 indexed jobId);
    /// @notice A payment-token credit was paid out.
    event Withdrawn(address indexed account, address indexed to, uint256 amount);
    /// @notice A staking-token credit was paid out.
    event RewardsWithdrawn(address indexed account, address indexed to, uint256 amount);
    /// @notice Posting was paused.
    event Paused(address account);
    /// @notice Posting was resumed.
    event Unpaused(address account);
    /// @notice Parameters were proposed; `applyParams` accepts them from `effectiveAt` (unix seconds).
    event ParamsProposed(Params params, uint256 effectiveAt);
    /// @notice Parameters took effect (at deployment, or by `applyParams`).
    event ParamsSet(Params params);

    // ---------------------------------------------------------------- functions

    /// @notice Posts a job for the caller, pulling `maxPayment` into escrow (needs an allowance).
    /// Reverts while paused.
    /// @param modelId an active registered model
    /// @param inputHash hash of the input blob
    /// @param maxPayment payment-token wei to escrow (non-zero)
    /// @param deadline unix seconds, strictly in the future
    /// @return jobId the new job's id (1, 2, ...)
    function postJob(bytes32 modelId, bytes32 inputHash, uint96 maxPayment, uint40 deadline)
        external
        returns (uint256 jobId);

    /// @notice Posts a job signed by `request.client` (EIP-712), relayed by anyone. With a
    /// non-zero `permit.value` the escrow is approved by an EIP-2612 permit first; a permit that
    /// was already used (front-run) is tolerated when the allowance suffices.
    /// @param request the signed request (nonce must equal `nonces(client)`)
    /// @param signature the client's signature (EOA or ERC-1271)
    /// @param permit optional permit (value 0: none)
    /// @return jobId the new job's id
    function postJobWithSig(JobRequest calldata request, bytes calldata signature, Permit calldata permit)
        external
        returns (uint256 jobId);

    /// @notice Claims a posted job for the caller while block.timestamp < deadline, locking
    /// claimCollateral + maxPayment x collateralPerPaymentWei of its stake; the claim expires at
    /// min(now + claimTimeout, deadline). Works while paused (the job is already escrowed).
    /// @param jobId the job
    /// @param job its current record
    function claimJob(uint256 jobId, Job calldata job) external;

    /// @notice Releases a claim not delivered by its expiry (block.timestamp > claimExpiry):
    /// slashes refundPenaltyBps of the collateral to the client (a strike), unlocks the rest and
    /// puts the job back to Posted. Anyone may call.
    function releaseClaim(uint256 jobId, Job calldata job) external;

    /// @notice Submits the provider-signed receipt while block.timestamp <= claimExpiry. Anyone
    /// may relay it; the signer must be the job's provider; its runtime must be listed for the
    /// model and its class listed (`IModelRegistry.checkReceipt`). Opens the challenge window
    /// (fixed at posting).
    function submitReceipt(Job calldata job, Receipt calldata receipt, bytes calldata signature) external;

    /// @notice Challenges a delivered job while block.timestamp < challengeEnd, posting
    /// `challengeBond`. The caller must be an eligible provider of the model other than the job's
    /// provider. Records the dispute only: its committee is drawn later by `drawCommittee`.
    /// One challenge per receipt: the first settles it for everyone. Self-challenge does not
    /// pay: a provider whose own sybil challenges it recovers at most `maxChallengerReward`
    /// (and at most challengerRewardBps) of the slash it loses, the rest goes to the committee
    /// and the treasury. Works while paused.
    function challenge(uint256 jobId, Job calldata job) external;

    /// @notice Draws the committee of a dispute from the hash of block drawBlock, in blocks
    /// drawBlock + 1 .. drawBlock + 256 (anyone may call). Opens the commit phase (commitPeriod
    /// from now) and the reveal phase after it. With fewer than two eligible providers
    /// besides the parties, no committee is drawn and `resolveDispute` settles neutrally at once.
    function drawCommittee(uint256 jobId) external;

    /// @notice Commits a vote while block.timestamp < commitEnd, locking memberBond per seat of
    /// the member's free stake. `commitment` is
    /// keccak256(abi.encode(jobId, member, outputHash, units, salt)).
    function commitVote(uint256 jobId, bytes32 commitment) external;

    /// @notice Reveals a committed vote while commitEnd <= block.timestamp < revealEnd.
    /// @param outputHash the output hash the member computed
    /// @param units the units the member computed for the input
    /// @param salt the commitment's salt
    function revealVote(uint256 jobId, bytes32 outputHash, uint64 units, bytes32 salt) external;

    /// @notice Ends a dispute. Anyone may call. Outcomes:
    /// - not drawn, block.number > drawBlock + 256: Neutral (the draw expired);
    /// - no committee (too few eligible): Neutral, at once;
    /// - after revealEnd, with at least a quorum (committeeSize / 2 + 1) of seats revealed and
    ///   a strict majority: ProviderWon or ProviderLost;
    /// - after revealEnd otherwise: Escalated, governance decides until escalationEnd =
    ///   revealEnd... + escalationPeriod; once block.timestamp >= escalationEnd: Neutral.
    /// Neutral: client refunded in full, bond returned, collateral released, no slash.
    /// ProviderLost: client refunded, bond returned, the provider's collateral slashed and the
    /// provider jailed; the challenger gets min(challengerRewardBps, maxChallengerReward) of it,
    /// the majority committeeRewardBps, the treasury the rest. ProviderWon: the bond goes to the
    /// provider less committeeRewardBps to the majority; the job may be finalized at once.
    /// In every outcome members that did not reveal, or voted against the outcome, lose
    /// memberPenaltyBps of their bond per seat (a strike), shared by the majority.
    function resolveDispute(uint256 jobId, Job calldata job) external;

    /// @notice Governance decision for an escalated dispute while block.timestamp < escalationEnd.
    /// Owner only.
    function resolveEscalated(uint256 jobId, Job calldata job, bool providerWon) external;

    /// @notice Once block.timestamp >= challengeEnd, credits provider, treasury (fee at the
    /// posting's rate) and client. Anyone may call; works while paused.
    function finalize(uint256 jobId, Job calldata job) external;

    /// @notice Once block.timestamp > deadline of an undelivered job, refunds the client in full
    /// and, for a claimed one, slashes refundPenaltyBps of the collateral to the client.
    /// Anyone may call.
    function refund(uint256 jobId, Job calldata job) external;

    /// @notice Pays out the caller's whole payment-token credit to `to`.
    function withdraw(address to) external returns (uint256 amount);

    /// @notice Pays out the caller's whole staking-token reward credit to `to`.
    function withdrawRewards(address to) external returns (uint256 amount);

    /// @notice Proposes new parameters, effective `PARAMS_DELAY` seconds from now (the
    /// `ParamsProposed` event carries them). Owner only. Replaces a pending proposal.
    function proposeParams(Params calldata params) external;
    /// @notice Applies the pending parameters (passed again, checked against the proposal's
    /// hash; `NoPendingParams` otherwise) once block.timestamp >= their effectiveAt. Anyone.
    function applyParams(Params calldata params) external;
    /// @notice Stops posting. Owner only.
    function pause() external;
    /// @notice Resumes posting. Owner only.
    function unpause() external;
    /// @notice Whether posting is paused.
    function paused() external view returns (bool);

    /// @notice The job's status (a cleared word at or below `jobCount` reads Finalized).
    function jobStatus(uint256 jobId) external view returns (Status);
    /// @notice The commitment storage holds for a record (its hash with the status in the low byte).
    function hashJob(Job calldata job) external pure returns (bytes32);
    /// @notice The number of jobs ever posted (the last id).
    function jobCount() external view returns (uint256);
    /// @notice Payment-token wei withdrawable by `account`.
    function balanceOf(address account) external view returns (uint256);
    /// @notice Staking-token wei withdrawable by `account`.
    function rewardOf(address account) external view returns (uint256);
    /// @notice The parameters in effect.
    function params() external view returns (Params memory);
    /// @notice keccak256(abi.encode(params)) of the pending parameters and the unix second from
    /// which `applyParams` accepts them (0, 0: none pending).
    function pendingParams() external view returns (bytes32 paramsHash, uint256 effectiveAt);
    /// @notice The committee seats of a job's dispute (one address per seat).
    function committee(uint256 jobId) external view returns (address[] memory);
    /// @notice A job's dispute (all zero when never challenged).
    function dispute(uint256 jobId) external view returns (DisputeView memory);
    /// @notice An account's seats, commit, reveal and locked bond in a job's dispute.
    function member(uint256 jobId, address account) external view returns (MemberView memory);
    /// @notice The payment token (escrow, fees, challenge bonds).
    function paymentToken() external view returns (address);
    /// @notice The staking contract.
    function staking() external view returns (address);
    /// @notice The model registry.
    function registry() external view returns (address);
    /// @notice The next job-request nonce of `owner`.
    function nonces(address owner) external view returns (uint256);
    /// @notice The EIP-712 domain separator of job requests and receipts.
    function DOMAIN_SEPARATOR() external view returns (bytes32);
}
