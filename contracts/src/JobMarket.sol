// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IJobMarket} from "./interfaces/IJobMarket.sol";
import {IStaking} from "./interfaces/IStaking.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {DisputeGame} from "./DisputeGame.sol";

/// @title JobMarket
/// @notice See `IJobMarket`. The dispute game lives in the `DisputeGame` library (linked at
/// deployment), which a batch-settlement path calls the same way.
/// @dev A finalized job's storage word is cleared (a gas refund that keeps a job's life under
/// 250k gas); a zero word for an id at or below `jobCount` therefore reads as `Finalized`.
contract JobMarket is IJobMarket, Ownable2Step, ReentrancyGuardTransient, EIP712, Nonces {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    bytes32 public constant JOB_REQUEST_TYPEHASH = keccak256(
        "JobRequest(address client,bytes32 modelId,bytes32 inputHash,uint96 maxPayment,uint40 deadline,uint256 nonce)"
    );
    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(uint256 jobId,bytes32 outputHash,uint64 units,bytes32 modelHash,bytes32 runtimeHash,bytes32 gpuClass)"
    );
    /// @notice Seconds between `proposeParams` and the earliest `applyParams`.
    uint256 public constant PARAMS_DELAY = 1 days;
    /// @notice Fewest and most committee seats (`Params.committeeSize`, always odd).
    uint256 public constant MIN_COMMITTEE = 3;
    uint256 public constant MAX_COMMITTEE = 15;
    uint256 private constant BPS = 10_000;
    /// @dev The low byte of a stored job word holds its status; the rest is the record's hash.
    uint256 private constant STATUS_MASK = 0xff;

    IERC20 private immutable _payment;
    IStaking private immutable _staking;
    IModelRegistry private immutable _registry;

    /// @dev What posting reads and writes, in one slot: the pause flag, the job counter and the
    /// terms a job snapshots (copies of `_params` fields). Keeping the flag here (instead of
    /// OpenZeppelin's `Pausable`) saves a storage read per job.
    struct Posting {
        bool paused;
        uint40 jobCount;
        address treasury;
        uint16 feeBps;
        uint32 challengeWindow;
    }

    Posting private _posting;
    Params private _params;
    bytes32 private _pendingHash;
    uint256 private _pendingAt;
    mapping(uint256 jobId => bytes32) private _jobs;
    mapping(address account => uint256) private _balances;
    mapping(address account => uint256) private _rewards;
    mapping(uint256 jobId => DisputeGame.Dispute) private _disputes;

    /// @param owner_ governance
    /// @param payment_ the payment token (escrow, fees, challenge bonds)
    /// @param staking_ the staking contract (collateral, committee draws, slashes)
    /// @param registry_ the model registry (prices, runtimes, numerics classes)
    /// @param params_ the initial parameters (effective at once)
    constructor(address owner_, IERC20 payment_, IStaking staking_, IModelRegistry registry_, Params memory params_)
        Ownable(owner_)
        EIP712("Hearth JobMarket", "1")
    {
        _payment = payment_;
        _staking = staking_;
        _registry = registry_;
        _checkParams(params_);
        _setParams(params_);
    }

    // ---------------------------------------------------------------- posting

    /// @inheritdoc IJobMarket
    function postJob(bytes32 modelId, bytes32 inputHash, uint96 maxPayment, uint40 deadline)
        external
        nonReentrant
        returns (uint256)
    {
        return _post(msg.sender, modelId, inputHash, maxPayment, deadline);
    }

    /// @inheritdoc IJobMarket
    function postJobWithSig(JobRequest calldata request, bytes calldata signature, Permit calldata permit)
        external
        nonReentrant
        returns (uint256)
    {
        _useCheckedNonce(request.client, request.nonce);
        bytes32 digest = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    JOB_REQUEST_TYPEHASH,
                    request.client,
                    request.modelId,
                    request.inputHash,
                    request.maxPayment,
                    request.deadline,
                    request.nonce
                )
            )
        );
        require(SignatureChecker.isValidSignatureNow(request.client, digest, signature), InvalidSignature());
        if (permit.value != 0) {
            // A permit can be front-run by anyone who saw it; if it was, the allowance it set is
            // already in place and the transfer below succeeds, so a failure here is not fatal.
            try IERC20Permit(address(_payment)).permit(
                request.client, address(this), permit.value, permit.deadline, permit.v, permit.r, permit.s
            ) {} catch {}
        }
        return _post(request.client, request.modelId, request.inputHash, request.maxPayment, request.deadline);
    }

    // ---------------------------------------------------------------- provider path

    /// @inheritdoc IJobMarket
    function claimJob(uint256 jobId, Job calldata job) external nonReentrant {
        _check(jobId, job, Status.Posted);
        require(block.timestamp < job.deadline, DeadlinePassed(job.deadline));
        Params storage p = _params;
        Job memory j = job;
        j.provider = msg.sender;
        j.collateral = (uint256(p.claimCollateral) + uint256(job.maxPayment) * p.collateralPerPaymentWei).toUint96();
        uint256 expiry = block.timestamp + p.claimTimeout;
        j.claimExpiry = uint40(expiry < job.deadline ? expiry : job.deadline);
        j.status = Status.Claimed;
        _store(jobId, j);
        emit JobClaimed(jobId, msg.sender, j.collateral, j.claimExpiry);
        _staking.lockCollateral(msg.sender, job.modelId, j.collateral);
    }

    /// @inheritdoc IJobMarket
    function releaseClaim(uint256 jobId, Job calldata job) external nonReentrant {
        _check(jobId, job, Status.Claimed);
        require(block.timestamp > job.claimExpiry, ClaimNotExpired(jobId, job.claimExpiry));
        Job memory j = job;
        j.provider = address(0);
        j.collateral = 0;
        j.claimExpiry = 0;
        j.status = Status.Posted;
        _store(jobId, j);
        uint256 penalty = Math.mulDiv(job.collateral, _params.refundPenaltyBps, BPS);
        emit ClaimReleased(jobId, job.provider, penalty);
        _staking.slash(job.provider, job.collateral, penalty, job.client, false);
    }

    /// @inheritdoc IJobMarket
    function submitReceipt(Job calldata job, Receipt calldata receipt, bytes calldata signature) external {
        uint256 jobId = receipt.jobId;
        _check(jobId, job, Status.Claimed);
        require(block.timestamp <= job.claimExpiry, ClaimExpired(jobId, job.claimExpiry));
        require(receipt.modelHash == job.modelId, ModelMismatch(jobId, job.modelId, receipt.modelHash));
        require(receipt.units != 0, ZeroUnits(jobId));
        bytes32 digest = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    RECEIPT_TYPEHASH,
                    jobId,
                    receipt.outputHash,
                    receipt.units,
                    receipt.modelHash,
                    receipt.runtimeHash,
                    receipt.gpuClass
                )
            )
        );
        require(SignatureChecker.isValidSignatureNow(job.provider, digest, signature), InvalidSignature());
        _registry.checkReceipt(job.modelId, receipt.runtimeHash, receipt.gpuClass);
        uint256 due = uint256(receipt.units) * job.pricePerUnit;
        Job memory j = job;
        j.payment = due < job.maxPayment ? uint96(due) : job.maxPayment;
        j.outputHash = receipt.outputHash;
        j.units = receipt.units;
        j.gpuClass = receipt.gpuClass;
        // Before delivery challengeEnd holds the window fixed at posting.
        j.challengeEnd = uint40(block.timestamp + job.challengeEnd);
        j.status = Status.Delivered;
        _store(jobId, j);
        emit ReceiptSubmitted(
            jobId,
            job.provider,
            receipt.outputHash,
            receipt.units,
            receipt.modelHash,
            receipt.runtimeHash,
            receipt.gpuClass,
            j.payment,
            j.challengeEnd
        );
    }

    // ---------------------------------------------------------------- disputes

    /// @inheritdoc IJobMarket
    function challenge(uint256 jobId, Job calldata job) external nonReentrant {
        _check(jobId, job, Status.Delivered);
        require(block.timestamp < job.challengeEnd, ChallengeWindowClosed(jobId));
        require(
            msg.sender != job.provider && _staking.isEligible(msg.sender, job.modelId),
            ChallengerNotEligible(msg.sender)
        );
        Job memory j = job;
        j.status = Status.Challenged;
        _store(jobId, j);
        uint256 bond = DisputeGame.openWithParams(
            _disputes[jobId],
            jobId,
            DisputeGame.Claim(job.provider, msg.sender, job.modelId, job.gpuClass, job.outputHash, job.units),
            _params
        );
        if (bond != 0) _pullExact(msg.sender, bond);
    }

    /// @inheritdoc IJobMarket
    function drawCommittee(uint256 jobId) external nonReentrant {
        DisputeGame.draw(_disputes[jobId], jobId, _staking);
    }

    /// @inheritdoc IJobMarket
    function commitVote(uint256 jobId, bytes32 commitment) external nonReentrant {
        DisputeGame.commit(_disputes[jobId], jobId, _staking, msg.sender, commitment);
    }

    /// @inheritdoc IJobMarket
    function revealVote(uint256 jobId, bytes32 outputHash, uint64 units, bytes32 salt) external {
        DisputeGame.reveal(_disputes[jobId], jobId, msg.sender, outputHash, units, salt);
    }

    /// @inheritdoc IJobMarket
    function resolveDispute(uint256 jobId, Job calldata job) external nonReentrant {
        _check(jobId, job, Status.Challenged);
        DisputeGame.Dispute storage d = _disputes[jobId];
        Outcome outcome = DisputeGame.resolve(d, jobId);
        if (outcome == Outcome.Escalated) {
            emit DisputeResolved(jobId, outcome, false, 0, 0, d.escalationEnd);
            return;
        }
        _settle(jobId, job, d, outcome, false);
    }

    /// @inheritdoc IJobMarket
    function resolveEscalated(uint256 jobId, Job calldata job, bool providerWon) external onlyOwner nonReentrant {
        _check(jobId, job, Status.Challenged);
        DisputeGame.Dispute storage d = _disputes[jobId];
        _settle(jobId, job, d, DisputeGame.decide(d, jobId, providerWon), true);
    }

    // ---------------------------------------------------------------- settlement

    /// @inheritdoc IJobMarket
    function finalize(uint256 jobId, Job calldata job) external nonReentrant {
        _check(jobId, job, Status.Delivered);
        require(block.timestamp >= job.challengeEnd, ChallengeWindowOpen(jobId, job.challengeEnd));
        uint96 fee = uint96(Math.mulDiv(job.payment, job.feeBps, BPS));
        // Cannot underflow: fee <= payment <= maxPayment (feeBps <= BPS, payment capped at receipt).
        uint96 providerAmount;
        uint96 clientRefund;
        unchecked {
            providerAmount = job.payment - fee;
            clientRefund = job.maxPayment - job.payment;
        }
        delete _jobs[jobId];
        _balances[job.provider] += providerAmount;
        if (fee != 0) _balances[job.treasury] += fee;
        if (clientRefund != 0) _balances[job.client] += clientRefund;
        emit JobFinalized(jobId, job.provider, job.client, providerAmount, fee, clientRefund, job.treasury);
        _staking.unlockCollateral(job.provider, job.collateral);
    }

    /// @inheritdoc IJobMarket
    function refund(uint256 jobId, Job calldata job) external nonReentrant {
        require(job.status == Status.Posted || job.status == Status.Claimed, WrongStatus(jobId, job.status));
        _check(jobId, job, job.status);
        require(block.timestamp > job.deadline, DeadlineNotPassed(jobId, job.deadline));
        uint256 penalty;
        if (job.status == Status.Claimed) penalty = Math.mulDiv(job.collateral, _params.refundPenaltyBps, BPS);
        Job memory j = job;
        j.status = Status.Refunded;
        _store(jobId, j);
        _balances[job.client] += job.maxPayment;
        emit JobRefunded(jobId, job.client, job.maxPayment, penalty);
        if (job.status == Status.Claimed) _staking.slash(job.provider, job.collateral, penalty, job.client, false);
    }

    /// @inheritdoc IJobMarket
    function withdraw(address to) external nonReentrant returns (uint256 amount) {
        amount = _balances[msg.sender];
        require(amount != 0, NothingToWithdraw(msg.sender));
        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, to, amount);
        _payment.safeTransfer(to, amount);
    }

    /// @inheritdoc IJobMarket
    function withdrawRewards(address to) external nonReentrant returns (uint256 amount) {
        amount = _rewards[msg.sender];
        require(amount != 0, NothingToWithdraw(msg.sender));
        _rewards[msg.sender] = 0;
        emit RewardsWithdrawn(msg.sender, to, amount);
        IERC20(_staking.stakingToken()).safeTransfer(to, amount);
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IJobMarket
    function proposeParams(Params calldata params_) external onlyOwner {
        _checkParams(params_);
        _pendingHash = keccak256(abi.encode(params_));
        uint256 effectiveAt = block.timestamp + PARAMS_DELAY;
        _pendingAt = effectiveAt;
        emit ParamsProposed(params_, effectiveAt);
    }

    /// @inheritdoc IJobMarket
    function applyParams(Params calldata params_) external {
        uint256 effectiveAt = _pendingAt;
        require(effectiveAt != 0 && keccak256(abi.encode(params_)) == _pendingHash, NoPendingParams());
        require(block.timestamp >= effectiveAt, ParamsNotReady(effectiveAt));
        _pendingHash = bytes32(0);
        _pendingAt = 0;
        _setParams(params_);
    }

    /// @inheritdoc IJobMarket
    function pause() external onlyOwner {
        require(!_posting.paused, EnforcedPause());
        _posting.paused = true;
        emit Paused(msg.sender);
    }

    /// @inheritdoc IJobMarket
    function unpause() external onlyOwner {
        require(_posting.paused, ExpectedPause());
        _posting.paused = false;
        emit Unpaused(msg.sender);
    }

    /// @inheritdoc IJobMarket
    function paused() external view returns (bool) {
        return _posting.paused;
    }

    /// @notice Disabled: reverts with `OwnershipCannotBeRenounced` (escalated disputes and
    /// parameters need governance; disputes end without it anyway, see `resolveDispute`).
    function renounceOwnership() public pure override {
        revert OwnershipCannotBeRenounced();
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IJobMarket
    function jobStatus(uint256 jobId) external view returns (Status) {
        bytes32 stored = _jobs[jobId];
        if (stored == bytes32(0)) return jobId != 0 && jobId <= _posting.jobCount ? Status.Finalized : Status.None;
        return Status(uint8(uint256(stored) & STATUS_MASK));
    }

    /// @inheritdoc IJobMarket
    function hashJob(Job calldata job) external pure returns (bytes32) {
        return _commitment(job);
    }

    /// @inheritdoc IJobMarket
    function jobCount() external view returns (uint256) {
        return _posting.jobCount;
    }

    /// @inheritdoc IJobMarket
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @inheritdoc IJobMarket
    function rewardOf(address account) external view returns (uint256) {
        return _rewards[account];
    }

    /// @inheritdoc IJobMarket
    function params() external view returns (Params memory) {
        return _params;
    }

    /// @inheritdoc IJobMarket
    function pendingParams() external view returns (bytes32, uint256) {
        return (_pendingHash, _pendingAt);
    }

    /// @inheritdoc IJobMarket
    function committee(uint256 jobId) external view returns (address[] memory) {
        return _disputes[jobId].seats;
    }

    /// @inheritdoc IJobMarket
    function dispute(uint256 jobId) external view returns (DisputeView memory) {
        return DisputeGame.view_(_disputes[jobId]);
    }

    /// @inheritdoc IJobMarket
    function member(uint256 jobId, address account) external view returns (MemberView memory) {
        return DisputeGame.memberView(_disputes[jobId], account);
    }

    /// @inheritdoc IJobMarket
    function paymentToken() external view returns (address) {
        return address(_payment);
    }

    /// @inheritdoc IJobMarket
    function staking() external view returns (address) {
        return address(_staking);
    }

    /// @inheritdoc IJobMarket
    function registry() external view returns (address) {
        return address(_registry);
    }

    /// @inheritdoc IJobMarket
    function nonces(address owner) public view override(IJobMarket, Nonces) returns (uint256) {
        return super.nonces(owner);
    }

    /// @inheritdoc IJobMarket
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internal

    function _post(address client, bytes32 modelId, bytes32 inputHash, uint96 maxPayment, uint40 deadline)
        internal
        returns (uint256 jobId)
    {
        require(maxPayment != 0, ZeroPayment());
        require(deadline > block.timestamp, DeadlinePassed(deadline));
        uint96 price = uint96(_registry.activePrice(modelId));
        Posting memory p = _posting;
        require(!p.paused, EnforcedPause());
        (address treasury, uint16 feeBps, uint32 window) = (p.treasury, p.feeBps, p.challengeWindow);
        jobId = p.jobCount + 1;
        _posting.jobCount = uint40(jobId);
        _store(
            jobId,
            Job(
                client,
                address(0),
                modelId,
                inputHash,
                maxPayment,
                price,
                0,
                0,
                deadline,
                window,
                Status.Posted,
                bytes32(0),
                0,
                bytes32(0),
                treasury,
                feeBps,
                0
            )
        );
        emit JobPosted(jobId, client, modelId, inputHash, maxPayment, price, deadline, msg.sender, treasury, feeBps, window);
        _pullExact(client, maxPayment);
    }

    /// @dev Settles the job's escrow for a final outcome; the game settles collateral, bond,
    /// slash and committee.
    function _settle(uint256 jobId, Job calldata job, DisputeGame.Dispute storage d, Outcome outcome, bool byGovernance)
        internal
    {
        Job memory j = job;
        bool won = outcome == Outcome.ProviderWon;
        if (won) {
            // The receipt stands: the job can be finalized now (its collateral stays locked until then).
            j.status = Status.Delivered;
            j.challengeEnd = uint40(block.timestamp);
        } else {
            j.status = Status.Refunded;
            _balances[job.client] += job.maxPayment;
        }
        _store(jobId, j);
        // A lost dispute slashes the job's collateral whole: it is locked for this job, and a
        // slash backed by an unlock of its amount always takes all of it (see IStaking.slash).
        // The events come first, so that every slash of this transaction follows an event
        // naming the job.
        uint256 slashed = outcome == Outcome.ProviderLost ? job.collateral : 0;
        emit DisputeResolved(jobId, outcome, byGovernance, slashed, won ? j.challengeEnd : 0, 0);
        if (!won) emit JobRefunded(jobId, job.client, job.maxPayment, 0);
        uint256 collateral = won ? 0 : job.collateral;
        DisputeGame.settle(d, jobId, _staking, outcome, collateral, collateral, job.treasury, _balances, _rewards);
    }

    /// @dev Pulls exactly `amount`; tokens that deliver less (fee-on-transfer) are refused.
    function _pullExact(address from, uint256 amount) internal {
        uint256 before = _payment.balanceOf(address(this));
        _payment.safeTransferFrom(from, address(this), amount);
        uint256 received = _payment.balanceOf(address(this)) - before;
        require(received == amount, TokenTransferShortfall(amount, received));
    }

    function _check(uint256 jobId, Job calldata job, Status expected) internal view {
        bytes32 stored = _jobs[jobId];
        if (stored == bytes32(0)) {
            require(jobId != 0 && jobId <= _posting.jobCount, UnknownJob(jobId));
            revert WrongStatus(jobId, Status.Finalized);
        }
        require(stored == _commitment(job), JobMismatch(jobId));
        require(job.status == expected, WrongStatus(jobId, job.status));
    }

    function _store(uint256 jobId, Job memory job) internal {
        _jobs[jobId] = _commitmentMem(job);
    }

    function _commitment(Job calldata job) internal pure returns (bytes32) {
        return bytes32((uint256(keccak256(abi.encode(job))) & ~STATUS_MASK) | uint8(job.status));
    }

    function _commitmentMem(Job memory job) internal pure returns (bytes32) {
        return bytes32((uint256(keccak256(abi.encode(job))) & ~STATUS_MASK) | uint8(job.status));
    }

    function _setParams(Params memory p) internal {
        _params = p;
        Posting storage posting = _posting;
        (posting.treasury, posting.feeBps, posting.challengeWindow) = (p.treasury, p.feeBps, p.challengeWindow);
        emit ParamsSet(p);
    }

    function _checkParams(Params memory p) internal pure {
        require(
            p.treasury != address(0) && p.feeBps <= BPS && p.refundPenaltyBps <= BPS && p.sampleRateBps <= BPS
                && p.memberPenaltyBps <= BPS && uint256(p.challengerRewardBps) + p.committeeRewardBps <= BPS
                && p.challengeWindow != 0 && p.commitPeriod != 0 && p.revealPeriod != 0 && p.claimTimeout != 0
                && p.escalationPeriod != 0 && p.committeeSize % 2 == 1 && p.committeeSize >= MIN_COMMITTEE
                && p.committeeSize <= MAX_COMMITTEE,
            InvalidParameter()
        );
    }
}
