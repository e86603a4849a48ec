// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IJobMarket} from "./interfaces/IJobMarket.sol";
import {IStaking} from "./interfaces/IStaking.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title JobMarket
/// @dev Pausing stops new jobs and new challenges; claiming jobs already escrowed, delivery,
/// settlement, refunds and withdrawals keep working, so a pause never strands funds or
/// penalises a provider mid-job.
///
/// A finalized job's storage word is cleared (a gas refund that keeps a job's life under 250k
/// gas); a zero word for an id at or below `jobCount` therefore reads as `Finalized`.
contract JobMarket is IJobMarket, Ownable2Step, Pausable, ReentrancyGuardTransient, EIP712, Nonces {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    struct Dispute {
        address challenger;
        uint64 bond;
        uint40 commitEnd;
        uint40 revealEnd;
        uint8 agree;
        uint8 disagree;
        bool escalated;
        bytes32 receiptOutput;
        address[] committee;
        mapping(address voter => bytes32) commits;
        mapping(address voter => bool) revealed;
    }

    bytes32 public constant JOB_REQUEST_TYPEHASH = keccak256(
        "JobRequest(address client,bytes32 modelId,bytes32 inputHash,uint96 maxPayment,uint40 deadline,uint256 nonce)"
    );
    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(uint256 jobId,bytes32 outputHash,uint64 units,bytes32 modelHash,bytes32 runtimeHash,bytes32 gpuClass)"
    );
    uint256 private constant BPS = 10_000;
    /// @dev The low byte of a stored job word holds its status; the rest is the record's hash.
    uint256 private constant STATUS_MASK = 0xff;

    IERC20 private immutable _payment;
    IStaking private immutable _staking;
    IModelRegistry private immutable _registry;

    Params private _params;
    uint256 private _jobCount;
    mapping(uint256 jobId => bytes32) private _jobs;
    mapping(address account => uint256) private _balances;
    mapping(uint256 jobId => Dispute) private _disputes;

    constructor(address owner_, IERC20 payment_, IStaking staking_, IModelRegistry registry_, Params memory params_)
        Ownable(owner_)
        EIP712("Hearth JobMarket", "1")
    {
        _payment = payment_;
        _staking = staking_;
        _registry = registry_;
        _setParams(params_);
    }

    // ---------------------------------------------------------------- posting

    /// @inheritdoc IJobMarket
    function postJob(bytes32 modelId, bytes32 inputHash, uint96 maxPayment, uint40 deadline)
        external
        whenNotPaused
        nonReentrant
        returns (uint256)
    {
        return _post(msg.sender, modelId, inputHash, maxPayment, deadline);
    }

    /// @inheritdoc IJobMarket
    function postJobWithSig(JobRequest calldata request, bytes calldata signature, Permit calldata permit)
        external
        whenNotPaused
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
        Job memory j = job;
        j.provider = msg.sender;
        j.collateral = _params.claimCollateral;
        j.status = Status.Claimed;
        _store(jobId, j);
        emit JobClaimed(jobId, msg.sender, j.collateral);
        _staking.lockCollateral(msg.sender, job.modelId, j.collateral);
    }

    /// @inheritdoc IJobMarket
    function submitReceipt(Job calldata job, Receipt calldata receipt, bytes calldata signature) external {
        uint256 jobId = receipt.jobId;
        _check(jobId, job, Status.Claimed);
        require(block.timestamp <= job.deadline, DeadlinePassed(job.deadline));
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
        uint256 due = uint256(receipt.units) * job.pricePerUnit;
        Job memory j = job;
        j.payment = due < job.maxPayment ? uint96(due) : job.maxPayment;
        j.outputHash = receipt.outputHash;
        j.challengeEnd = (block.timestamp + _params.challengeWindow).toUint40();
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
    function challenge(uint256 jobId, Job calldata job) external whenNotPaused nonReentrant {
        _check(jobId, job, Status.Delivered);
        require(block.timestamp < job.challengeEnd, ChallengeWindowClosed(jobId));
        require(
            msg.sender != job.provider && _staking.isActive(msg.sender) && _staking.serves(msg.sender, job.modelId),
            ChallengerNotEligible(msg.sender)
        );
        Params memory p = _params;
        Dispute storage d = _disputes[jobId];
        d.challenger = msg.sender;
        d.bond = p.challengeBond;
        d.commitEnd = (block.timestamp + p.commitPeriod).toUint40();
        d.revealEnd = d.commitEnd + p.revealPeriod;
        d.receiptOutput = job.outputHash;
        d.committee = _drawCommittee(jobId, job.provider, msg.sender, job.modelId, p.committeeSize);
        Job memory j = job;
        j.status = Status.Challenged;
        _store(jobId, j);
        emit JobChallenged(jobId, msg.sender, d.bond, d.committee, d.commitEnd, d.revealEnd);
        if (d.bond != 0) _pullExact(msg.sender, d.bond);
    }

    /// @inheritdoc IJobMarket
    function commitVote(uint256 jobId, bytes32 commitment) external {
        Dispute storage d = _disputes[jobId];
        require(_isMember(d, msg.sender), NotCommitteeMember(jobId, msg.sender));
        require(block.timestamp < d.commitEnd, CommitPhaseOver(jobId));
        require(d.commits[msg.sender] == bytes32(0), AlreadyCommitted(jobId, msg.sender));
        d.commits[msg.sender] = commitment;
        emit VoteCommitted(jobId, msg.sender, commitment);
    }

    /// @inheritdoc IJobMarket
    function revealVote(uint256 jobId, bytes32 outputHash, bytes32 salt) external {
        Dispute storage d = _disputes[jobId];
        require(_isMember(d, msg.sender), NotCommitteeMember(jobId, msg.sender));
        require(block.timestamp >= d.commitEnd && block.timestamp < d.revealEnd, RevealPhaseNotOpen(jobId));
        require(!d.revealed[msg.sender], AlreadyRevealed(jobId, msg.sender));
        require(
            keccak256(abi.encode(jobId, msg.sender, outputHash, salt)) == d.commits[msg.sender],
            RevealDoesNotMatchCommit(jobId, msg.sender)
        );
        d.revealed[msg.sender] = true;
        // Cannot overflow: a committee has at most 255 members (committeeSize is a uint8).
        unchecked {
            if (outputHash == d.receiptOutput) d.agree++;
            else d.disagree++;
        }
        emit VoteRevealed(jobId, msg.sender, outputHash);
    }

    /// @inheritdoc IJobMarket
    function resolveDispute(uint256 jobId, Job calldata job) external nonReentrant {
        _check(jobId, job, Status.Challenged);
        Dispute storage d = _disputes[jobId];
        require(block.timestamp >= d.revealEnd, DisputeStillOpen(jobId));
        require(!d.escalated, WrongStatus(jobId, Status.Challenged));
        if (d.agree == d.disagree) {
            d.escalated = true;
            emit DisputeResolved(jobId, false, true, false, 0, 0);
            return;
        }
        _settle(jobId, job, d, d.agree > d.disagree, false);
    }

    /// @inheritdoc IJobMarket
    function resolveEscalated(uint256 jobId, Job calldata job, bool providerWon) external onlyOwner nonReentrant {
        _check(jobId, job, Status.Challenged);
        Dispute storage d = _disputes[jobId];
        require(d.escalated, DisputeNotEscalated(jobId));
        _settle(jobId, job, d, providerWon, true);
    }

    // ---------------------------------------------------------------- settlement

    /// @inheritdoc IJobMarket
    function finalize(uint256 jobId, Job calldata job) external nonReentrant {
        _check(jobId, job, Status.Delivered);
        require(block.timestamp >= job.challengeEnd, ChallengeWindowOpen(jobId, job.challengeEnd));
        Params storage p = _params;
        uint96 fee = uint96(Math.mulDiv(job.payment, p.feeBps, BPS));
        // Cannot underflow: fee <= payment <= maxPayment (feeBps <= BPS, payment capped at receipt).
        uint96 providerAmount;
        uint96 clientRefund;
        unchecked {
            providerAmount = job.payment - fee;
            clientRefund = job.maxPayment - job.payment;
        }
        address treasury = p.treasury;
        delete _jobs[jobId];
        _balances[job.provider] += providerAmount;
        if (fee != 0) _balances[treasury] += fee;
        if (clientRefund != 0) _balances[job.client] += clientRefund;
        emit JobFinalized(jobId, job.provider, job.client, providerAmount, fee, clientRefund, treasury);
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
        if (job.status == Status.Claimed) {
            _staking.unlockCollateral(job.provider, job.collateral);
            if (penalty != 0) _staking.slash(job.provider, penalty, job.client, false);
        }
    }

    /// @inheritdoc IJobMarket
    function withdraw(address to) external nonReentrant returns (uint256 amount) {
        amount = _balances[msg.sender];
        require(amount != 0, NothingToWithdraw(msg.sender));
        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, to, amount);
        _payment.safeTransfer(to, amount);
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IJobMarket
    function setParams(Params calldata params_) external onlyOwner {
        _setParams(params_);
    }

    /// @inheritdoc IJobMarket
    function pause() external onlyOwner {
        _pause();
    }

    /// @inheritdoc IJobMarket
    function unpause() external onlyOwner {
        _unpause();
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IJobMarket
    function jobStatus(uint256 jobId) external view returns (Status) {
        bytes32 stored = _jobs[jobId];
        if (stored == bytes32(0)) return jobId != 0 && jobId <= _jobCount ? Status.Finalized : Status.None;
        return Status(uint8(uint256(stored) & STATUS_MASK));
    }

    /// @inheritdoc IJobMarket
    function hashJob(Job calldata job) external pure returns (bytes32) {
        return _commitment(job);
    }

    /// @inheritdoc IJobMarket
    function jobCount() external view returns (uint256) {
        return _jobCount;
    }

    /// @inheritdoc IJobMarket
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @inheritdoc IJobMarket
    function params() external view returns (Params memory) {
        return _params;
    }

    /// @inheritdoc IJobMarket
    function committee(uint256 jobId) external view returns (address[] memory) {
        return _disputes[jobId].committee;
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
        jobId = ++_jobCount;
        _store(
            jobId,
            Job(client, address(0), modelId, inputHash, maxPayment, price, 0, 0, deadline, 0, Status.Posted, bytes32(0))
        );
        emit JobPosted(jobId, client, modelId, inputHash, maxPayment, price, deadline, msg.sender);
        _pullExact(client, maxPayment);
    }

    function _settle(uint256 jobId, Job calldata job, Dispute storage d, bool providerWon, bool byGovernance)
        internal
    {
        Job memory j = job;
        uint256 bond = d.bond;
        if (providerWon) {
            // The receipt stands: the bond goes to the provider and the job can be finalized now.
            j.status = Status.Delivered;
            j.challengeEnd = uint40(block.timestamp);
            _store(jobId, j);
            if (bond != 0) {
                _balances[job.provider] += bond;
                emit BalanceCredited(job.provider, bond, jobId);
            }
            emit DisputeResolved(jobId, true, false, byGovernance, 0, j.challengeEnd);
            return;
        }
        // The receipt was wrong: the client gets its escrow back, the challenger its bond, and
        // the provider is slashed to the challenger and jailed.
        j.status = Status.Refunded;
        _store(jobId, j);
        _balances[job.client] += job.maxPayment;
        if (bond != 0) {
            _balances[d.challenger] += bond;
            emit BalanceCredited(d.challenger, bond, jobId);
        }
        uint256 slashAmount = _params.disputeSlash;
        emit DisputeResolved(jobId, false, false, byGovernance, slashAmount, 0);
        emit JobRefunded(jobId, job.client, job.maxPayment, 0);
        _staking.unlockCollateral(job.provider, job.collateral);
        _staking.slash(job.provider, slashAmount, d.challenger, true);
    }

    /// @dev Draws up to `size` active providers serving the model, other than the two parties,
    /// starting at a pseudo-random index and walking the provider list (bounded by its length).
    function _drawCommittee(uint256 jobId, address provider, address challenger, bytes32 modelId, uint256 size)
        internal
        view
        returns (address[] memory members)
    {
        uint256 n = _staking.providerCount();
        members = new address[](size);
        uint256 found;
        uint256 start = n == 0 ? 0 : uint256(keccak256(abi.encode(block.prevrandao, jobId))) % n;
        for (uint256 i; i < n && found < size; ++i) {
            address a = _staking.providerAt((start + i) % n);
            if (a == provider || a == challenger) continue;
            if (!_staking.isActive(a) || !_staking.serves(a, modelId)) continue;
            members[found++] = a;
        }
        // Shrink the array to the members found.
        assembly ("memory-safe") {
            mstore(members, found)
        }
    }

    function _isMember(Dispute storage d, address voter) internal view returns (bool) {
        address[] storage c = d.committee;
        for (uint256 i; i < c.length; ++i) {
            if (c[i] == voter) return true;
        }
        return false;
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
            require(jobId != 0 && jobId <= _jobCount, UnknownJob(jobId));
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
        require(
            p.feeBps <= BPS && p.refundPenaltyBps <= BPS && p.sampleRateBps <= BPS && p.treasury != address(0)
                && p.challengeWindow != 0 && p.commitPeriod != 0 && p.revealPeriod != 0 && p.committeeSize != 0,
            InvalidParameter()
        );
        _params = p;
        emit ParamsSet(p);
    }
}
