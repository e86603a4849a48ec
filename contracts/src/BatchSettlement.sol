// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IBatchSettlement} from "./interfaces/IBatchSettlement.sol";
import {IPaymentEscrow} from "./interfaces/IPaymentEscrow.sol";
import {IStaking} from "./interfaces/IStaking.sol";
import {IJobMarket} from "./interfaces/IJobMarket.sol";
import {DisputeGame} from "./DisputeGame.sol";

/// @title BatchSettlement
/// @notice See `IBatchSettlement`. Leaf disputes run the shared `DisputeGame` library (linked at
/// deployment, as in `JobMarket`) in this contract's storage: one game per (batchId, index).
/// @dev Storage holds one word per batch: the hash of its `Batch` record, which every call that
/// acts on a batch takes as calldata and checks (as `JobMarket` does for jobs).
contract BatchSettlement is IBatchSettlement, Ownable2Step, ReentrancyGuardTransient, EIP712 {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @dev What a fraud moves; a struct keeps `_fraud` within the stack.
    struct FraudOutcome {
        address challenger;
        address payer;
        uint256 bond;
        uint256 refund;
        uint256 slashed;
        uint256 reward;
    }

    bytes32 public constant WORK_RECEIPT_TYPEHASH = keccak256(
        "WorkReceipt(bytes32 requestId,address payer,bytes32 modelId,bytes32 inputHash,bytes32 outputHash,"
        "uint64 units,uint96 value,bytes32 runtimeHash,bytes32 numericsClass)"
    );
    uint256 private constant BPS = 10_000;

    IPaymentEscrow private immutable _escrow;
    IStaking private immutable _staking;
    IJobMarket private immutable _market;
    IERC20 private immutable _payment;
    IERC20 private immutable _stakeToken;

    Params private _params;
    /// @dev The market's escalation period when the parameters were last set: leaf games escalate
    /// for this long, and the settlement horizon counts it.
    uint32 private _escalationPeriod;
    uint256 private _batchCount;
    mapping(uint256 batchId => bytes32) private _batches;
    mapping(uint256 batchId => mapping(uint256 index => LeafCase)) private _cases;
    mapping(address provider => mapping(bytes32 modelId => uint256)) private _prices;
    mapping(bytes32 modelId => uint256) private _ceilings;
    mapping(uint256 disputeId => DisputeGame.Dispute) private _games;
    /// @dev Payment-token credits (challenge bonds, committee shares), withdrawn by `withdraw`.
    mapping(address account => uint256) private _balances;
    /// @dev Staking-token credits (shares of slashes), withdrawn by `withdrawRewards`.
    mapping(address account => uint256) private _rewards;

    constructor(address owner_, IPaymentEscrow escrow_, IStaking staking_, IJobMarket market_, Params memory params_)
        Ownable(owner_)
        EIP712("Hearth BatchSettlement", "1")
    {
        _escrow = escrow_;
        _staking = staking_;
        _market = market_;
        _payment = IERC20(escrow_.paymentToken());
        _stakeToken = IERC20(staking_.stakingToken());
        _setParams(params_);
    }

    // ---------------------------------------------------------------- batches

    /// @inheritdoc IBatchSettlement
    function commitBatch(bytes32 root, uint32 count, uint64 units, uint96 value) external returns (uint256 batchId) {
        require(root != bytes32(0) && count != 0, EmptyBatch());
        require(_staking.isActive(msg.sender), ProviderNotActive(msg.sender));
        uint40 now_ = uint40(block.timestamp);
        Batch memory b = Batch(msg.sender, root, count, units, value, now_);
        // Cannot overflow: one batch per transaction.
        unchecked {
            batchId = ++_batchCount;
        }
        _batches[batchId] = keccak256(abi.encode(b));
        Params storage p = _params;
        emit BatchCommitted(batchId, msg.sender, root, count, units, value, now_, now_ + p.challengeWindow);
        _staking.extendLock(msg.sender, block.timestamp + _horizon(p));
    }

    // ---------------------------------------------------------------- leaf challenges

    /// @inheritdoc IBatchSettlement
    function demandLeaf(uint256 batchId, Batch calldata batch, uint256 index) external nonReentrant {
        _checkBatch(batchId, batch, index);
        Params storage p = _params;
        uint256 end = uint256(batch.committedAt) + p.challengeWindow;
        require(block.timestamp < end, ChallengeWindowClosed(batchId, end));
        require(msg.sender != batch.provider, NotEligible(msg.sender));
        LeafCase storage c = _cases[batchId][index];
        require(c.status == LeafStatus.None, WrongLeafStatus(batchId, index, c.status));
        uint96 bond = p.demandBond;
        uint40 deadline = (block.timestamp + p.revealWindow).toUint40();
        c.status = LeafStatus.Demanded;
        c.challenger = msg.sender;
        c.deadline = deadline;
        c.bond = bond;
        emit LeafDemanded(batchId, index, msg.sender, bond, deadline);
        if (bond != 0) _pullExact(msg.sender, bond);
    }

    /// @inheritdoc IBatchSettlement
    function revealLeaf(
        uint256 batchId,
        Batch calldata batch,
        uint256 index,
        WorkReceipt calldata leaf,
        bytes32[] calldata proof
    ) external nonReentrant {
        _checkBatch(batchId, batch, index);
        LeafCase storage c = _cases[batchId][index];
        require(c.status == LeafStatus.Demanded, WrongLeafStatus(batchId, index, c.status));
        require(block.timestamp < c.deadline, RevealWindowClosed(batchId, index, c.deadline));
        _checkProof(batchId, batch, index, leaf, proof);
        uint256 bond = c.bond;
        uint40 grace = (block.timestamp + _params.revealWindow).toUint40();
        c.status = LeafStatus.Revealed;
        c.deadline = grace;
        c.bond = 0;
        c.payer = leaf.payer;
        c.value = leaf.value;
        emit LeafRevealed(batchId, index, leaf, grace);
        // The demand cost the provider a transaction; the demander's bond pays for it.
        if (bond != 0) _payment.safeTransfer(batch.provider, bond);
    }

    /// @inheritdoc IBatchSettlement
    function settleWithheldLeaf(uint256 batchId, Batch calldata batch, uint256 index) external nonReentrant {
        _checkBatch(batchId, batch, index);
        LeafCase storage c = _cases[batchId][index];
        require(c.status == LeafStatus.Demanded, WrongLeafStatus(batchId, index, c.status));
        require(block.timestamp >= c.deadline, RevealWindowOpen(batchId, index, c.deadline));
        _fraud(batchId, batch.provider, index, c, true);
    }

    /// @inheritdoc IBatchSettlement
    function challengeLeaf(
        uint256 batchId,
        Batch calldata batch,
        uint256 index,
        WorkReceipt calldata leaf,
        bytes32[] calldata proof
    ) external nonReentrant {
        _checkBatch(batchId, batch, index);
        LeafCase storage c = _cases[batchId][index];
        if (c.status == LeafStatus.None) {
            uint256 end = uint256(batch.committedAt) + _params.challengeWindow;
            require(block.timestamp < end, ChallengeWindowClosed(batchId, end));
        } else {
            require(c.status == LeafStatus.Revealed, WrongLeafStatus(batchId, index, c.status));
            require(block.timestamp < c.deadline, ChallengeWindowClosed(batchId, c.deadline));
        }
        _checkProof(batchId, batch, index, leaf, proof);
        require(
            msg.sender != batch.provider && _staking.isActive(msg.sender) && _staking.serves(msg.sender, leaf.modelId),
            NotEligible(msg.sender)
        );
        uint256 bond = _openLeafDispute(batchId, batch.provider, index, msg.sender, leaf);
        if (bond != 0) _pullExact(msg.sender, bond);
    }

    /// @inheritdoc IBatchSettlement
    function drawLeafCommittee(uint256 batchId, uint256 index) external nonReentrant {
        LeafCase storage c = _cases[batchId][index];
        require(c.status == LeafStatus.Disputed, WrongLeafStatus(batchId, index, c.status));
        uint256 id = _disputeId(batchId, index);
        DisputeGame.Dispute storage d = _games[id];
        uint256 last = _drawDeadline(c, d);
        require(block.timestamp <= last, DrawWindowClosed(batchId, index, last));
        DisputeGame.draw(d, id, _staking);
    }

    /// @inheritdoc IBatchSettlement
    function commitLeafVote(uint256 batchId, uint256 index, bytes32 commitment) external nonReentrant {
        uint256 id = _disputeId(batchId, index);
        DisputeGame.commit(_games[id], id, _staking, msg.sender, commitment);
    }

    /// @inheritdoc IBatchSettlement
    function revealLeafVote(uint256 batchId, uint256 index, bytes32 outputHash, uint64 units, bytes32 salt)
        external
    {
        uint256 id = _disputeId(batchId, index);
        DisputeGame.reveal(_games[id], id, msg.sender, outputHash, units, salt);
    }

    /// @inheritdoc IBatchSettlement
    function resolveLeafDispute(uint256 batchId, Batch calldata batch, uint256 index) external nonReentrant {
        _checkBatch(batchId, batch, index);
        LeafCase storage c = _cases[batchId][index];
        require(c.status == LeafStatus.Disputed, WrongLeafStatus(batchId, index, c.status));
        DisputeGame.Dispute storage d = _games[_disputeId(batchId, index)];
        IJobMarket.Outcome outcome = DisputeGame.resolve(d, _disputeId(batchId, index));
        if (outcome == IJobMarket.Outcome.Escalated) {
            emit LeafDisputeEscalated(batchId, index, d.escalationEnd);
            return;
        }
        _resolveLeaf(batchId, batch.provider, index, outcome);
    }

    /// @inheritdoc IBatchSettlement
    function resolveLeaf(uint256 batchId, Batch calldata batch, uint256 index, bool fraud)
        external
        onlyOwner
        nonReentrant
    {
        _checkBatch(batchId, batch, index);
        LeafCase storage c = _cases[batchId][index];
        require(c.status == LeafStatus.Disputed, WrongLeafStatus(batchId, index, c.status));
        uint256 id = _disputeId(batchId, index);
        _resolveLeaf(batchId, batch.provider, index, DisputeGame.decide(_games[id], id, !fraud));
    }

    /// @inheritdoc IBatchSettlement
    function withdraw(address to) external nonReentrant returns (uint256 amount) {
        amount = _balances[msg.sender];
        require(amount != 0, IJobMarket.NothingToWithdraw(msg.sender));
        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, to, amount);
        _payment.safeTransfer(to, amount);
    }

    /// @inheritdoc IBatchSettlement
    function withdrawRewards(address to) external nonReentrant returns (uint256 amount) {
        amount = _rewards[msg.sender];
        require(amount != 0, IJobMarket.NothingToWithdraw(msg.sender));
        _rewards[msg.sender] = 0;
        emit RewardsWithdrawn(msg.sender, to, amount);
        _stakeToken.safeTransfer(to, amount);
    }

    // ---------------------------------------------------------------- prices

    /// @inheritdoc IBatchSettlement
    function quotePrice(bytes32 modelId, uint256 price) external {
        require(_staking.serves(msg.sender, modelId), ModelNotServed(msg.sender, modelId));
        uint256 ceiling = _ceilings[modelId];
        require(price <= ceiling, PriceAboveCeiling(modelId, price, ceiling));
        _prices[msg.sender][modelId] = price;
        emit PriceQuoted(msg.sender, modelId, price);
    }

    /// @inheritdoc IBatchSettlement
    function setPriceCeiling(bytes32 modelId, uint256 ceiling) external onlyOwner {
        _ceilings[modelId] = ceiling;
        emit PriceCeilingSet(modelId, ceiling);
    }

    /// @inheritdoc IBatchSettlement
    function setParams(Params calldata params_) external onlyOwner {
        _setParams(params_);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IBatchSettlement
    function priceOf(address provider, bytes32 modelId) external view returns (uint256) {
        // A quote above a ceiling lowered since counts at the ceiling.
        uint256 price = _prices[provider][modelId];
        uint256 ceiling = _ceilings[modelId];
        return price < ceiling ? price : ceiling;
    }

    /// @inheritdoc IBatchSettlement
    function priceCeiling(bytes32 modelId) external view returns (uint256) {
        return _ceilings[modelId];
    }

    /// @inheritdoc IBatchSettlement
    function batchCount() external view returns (uint256) {
        return _batchCount;
    }

    /// @inheritdoc IBatchSettlement
    function batchHash(uint256 batchId) external view returns (bytes32) {
        return _batches[batchId];
    }

    /// @inheritdoc IBatchSettlement
    function hashBatch(Batch calldata batch) external pure returns (bytes32) {
        return keccak256(abi.encode(batch));
    }

    /// @inheritdoc IBatchSettlement
    function leafCase(uint256 batchId, uint256 index) external view returns (LeafCase memory) {
        return _cases[batchId][index];
    }

    /// @inheritdoc IBatchSettlement
    function hashLeaf(WorkReceipt calldata leaf) external view returns (bytes32) {
        return _leafHash(leaf);
    }

    /// @inheritdoc IBatchSettlement
    function verifyLeaf(bytes32 root, uint256 count, uint256 index, bytes32 leaf, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        return index < count && _verify(root, count, index, leaf, proof);
    }

    /// @inheritdoc IBatchSettlement
    function settlementHorizon() external view returns (uint256) {
        return _horizon(_params);
    }

    /// @inheritdoc IBatchSettlement
    function leafDisputeId(uint256 batchId, uint256 index) external pure returns (uint256) {
        return _disputeId(batchId, index);
    }

    /// @inheritdoc IBatchSettlement
    function leafDispute(uint256 batchId, uint256 index) external view returns (IJobMarket.DisputeView memory) {
        return DisputeGame.view_(_games[_disputeId(batchId, index)]);
    }

    /// @inheritdoc IBatchSettlement
    function leafCommittee(uint256 batchId, uint256 index) external view returns (address[] memory) {
        return _games[_disputeId(batchId, index)].seats;
    }

    /// @inheritdoc IBatchSettlement
    function leafMember(uint256 batchId, uint256 index, address account)
        external
        view
        returns (IJobMarket.MemberView memory)
    {
        return DisputeGame.memberView(_games[_disputeId(batchId, index)], account);
    }

    /// @inheritdoc IBatchSettlement
    function drawDeadline(uint256 batchId, uint256 index) external view returns (uint256) {
        LeafCase storage c = _cases[batchId][index];
        if (c.status != LeafStatus.Disputed) return 0;
        return _drawDeadline(c, _games[_disputeId(batchId, index)]);
    }

    /// @inheritdoc IBatchSettlement
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @inheritdoc IBatchSettlement
    function rewardOf(address account) external view returns (uint256) {
        return _rewards[account];
    }

    /// @inheritdoc IBatchSettlement
    function lockedUntil(address provider) external view returns (uint256) {
        return _staking.lockedUntil(provider);
    }

    /// @inheritdoc IBatchSettlement
    function params() external view returns (Params memory) {
        return _params;
    }

    /// @inheritdoc IBatchSettlement
    function escrow() external view returns (address) {
        return address(_escrow);
    }

    /// @inheritdoc IBatchSettlement
    function staking() external view returns (address) {
        return address(_staking);
    }

    /// @inheritdoc IBatchSettlement
    function market() external view returns (address) {
        return address(_market);
    }

    /// @inheritdoc IBatchSettlement
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internal: dispute hooks

    /// @dev Records a dispute on a leaf, opens its game under the market's committee terms
    /// (with this contract's bond and challenger reward) and returns the bond the challenger
    /// must post.
    function _openLeafDispute(
        uint256 batchId,
        address provider,
        uint256 index,
        address challenger,
        WorkReceipt calldata leaf
    ) internal returns (uint256 bond) {
        Params storage p = _params;
        LeafCase storage c = _cases[batchId][index];
        bond = p.demandBond;
        uint40 deadline = (block.timestamp + _disputeDuration(p)).toUint40();
        c.status = LeafStatus.Disputed;
        c.challenger = challenger;
        c.deadline = deadline;
        c.bond = uint96(bond);
        c.payer = leaf.payer;
        c.value = leaf.value;
        emit LeafChallenged(
            batchId, index, challenger, leaf.payer, leaf.value, leaf.outputHash, uint96(bond), deadline
        );
        uint256 id = _disputeId(batchId, index);
        DisputeGame.Claim memory claim = DisputeGame.Claim(
            provider, challenger, leaf.modelId, _staking.classOf(provider), leaf.outputHash, leaf.units
        );
        DisputeGame.open(_games[id], id, claim, _leafTerms(p, bond));
    }

    /// @dev A leaf game's terms: the market's committee, this contract's bond, challenger reward
    /// (uncapped, as before the game) and escalation period.
    function _leafTerms(Params storage p, uint256 bond) internal view returns (DisputeGame.Terms memory t) {
        IJobMarket.Params memory m = _market.params();
        uint16 rewardBps = p.challengerRewardBps;
        // Both shares of a slash must fit in it.
        uint16 committeeBps = m.committeeRewardBps;
        if (uint256(rewardBps) + committeeBps > BPS) committeeBps = uint16(BPS - rewardBps);
        t.committeeSize = m.committeeSize;
        t.commitPeriod = m.commitPeriod;
        t.revealPeriod = m.revealPeriod;
        t.escalationPeriod = _escalationPeriod;
        t.bond = uint64(bond);
        t.memberBond = m.memberBond;
        t.memberPenaltyBps = m.memberPenaltyBps;
        t.challengerRewardBps = rewardBps;
        t.committeeRewardBps = committeeBps;
        t.maxChallengerReward = type(uint96).max;
    }

    /// @dev Applies a game's final outcome: ProviderLost is fraud (slash, refund, shares of the
    /// slash); ProviderWon upholds the receipt (the bond to the provider less the committee's
    /// share); Neutral upholds it by default (the bond back to the challenger).
    function _resolveLeaf(uint256 batchId, address provider, uint256 index, IJobMarket.Outcome outcome) internal {
        LeafCase storage c = _cases[batchId][index];
        uint256 id = _disputeId(batchId, index);
        DisputeGame.Dispute storage d = _games[id];
        Params storage p = _params;
        if (outcome == IJobMarket.Outcome.ProviderLost) {
            FraudOutcome memory o;
            o.challenger = c.challenger;
            o.payer = c.payer;
            o.refund = uint256(c.value) + Math.mulDiv(c.value, p.penaltyBps, BPS);
            c.status = LeafStatus.Fraud;
            c.bond = 0;
            o.slashed = DisputeGame.settle(
                d, id, _staking, outcome, 0, p.leafSlash, p.treasury, _balances, _rewards
            );
            o.reward = Math.mulDiv(o.slashed, d.terms.challengerRewardBps, BPS);
            o.refund = _escrow.seizeBond(provider, o.payer, o.refund);
            emit LeafFraudProven(
                batchId, index, provider, o.challenger, o.payer, o.refund, o.slashed, o.reward, false
            );
            return;
        }
        uint256 bond = c.bond;
        bool byDefault = outcome == IJobMarket.Outcome.Neutral;
        c.status = LeafStatus.Upheld;
        c.bond = 0;
        uint256 toProvider = byDefault ? 0 : bond - Math.mulDiv(bond, d.terms.committeeRewardBps, BPS);
        emit LeafUpheld(batchId, index, provider, toProvider, byDefault);
        DisputeGame.settle(d, id, _staking, outcome, 0, 0, p.treasury, _balances, _rewards);
    }

    /// @dev How long a leaf dispute may take until it can end in fraud: the voting window (draw,
    /// commit, reveal) and the escalation period. Past it, only the neutral default remains.
    function _disputeDuration(Params storage p) internal view returns (uint256) {
        return uint256(p.resolveWindow) + _escalationPeriod;
    }

    /// @dev The draw must leave the committee its full commit and reveal periods inside the
    /// dispute's voting window, so that fraud is decided within the settlement horizon.
    function _drawDeadline(LeafCase storage c, DisputeGame.Dispute storage d) internal view returns (uint256) {
        DisputeGame.Terms storage t = d.terms;
        uint256 reserved = uint256(t.escalationPeriod) + t.commitPeriod + t.revealPeriod;
        // The market's periods may have grown past the voting window since: then no draw.
        return c.deadline > reserved ? c.deadline - reserved : 0;
    }

    function _disputeId(uint256 batchId, uint256 index) internal pure returns (uint256) {
        return batchId << 32 | index;
    }

    // ---------------------------------------------------------------- internal

    function _fraud(uint256 batchId, address provider, uint256 index, LeafCase storage c, bool withheld) internal {
        Params memory p = _params;
        FraudOutcome memory o;
        o.challenger = c.challenger;
        o.payer = c.payer;
        o.bond = c.bond;
        if (!withheld) o.refund = uint256(c.value) + Math.mulDiv(c.value, p.penaltyBps, BPS);
        c.status = LeafStatus.Fraud;
        c.bond = 0;
        o.slashed = _staking.slash(provider, 0, p.leafSlash, address(this), true);
        o.reward = Math.mulDiv(o.slashed, p.challengerRewardBps, BPS);
        if (o.refund != 0) o.refund = _escrow.seizeBond(provider, o.payer, o.refund);
        emit LeafFraudProven(
            batchId, index, provider, o.challenger, o.payer, o.refund, o.slashed, o.reward, withheld
        );
        if (o.reward != 0) _stakeToken.safeTransfer(o.challenger, o.reward);
        // Cannot underflow: reward <= slashed (challengerRewardBps <= BPS).
        unchecked {
            if (o.slashed != o.reward) _stakeToken.safeTransfer(p.treasury, o.slashed - o.reward);
        }
        if (o.bond != 0) _payment.safeTransfer(o.challenger, o.bond);
    }

    function _checkBatch(uint256 batchId, Batch calldata batch, uint256 index) internal view {
        bytes32 stored = _batches[batchId];
        require(stored != bytes32(0), UnknownBatch(batchId));
        require(stored == keccak256(abi.encode(batch)), BatchMismatch(batchId));
        require(index < batch.count, IndexOutOfRange(batchId, index, batch.count));
    }

    function _checkProof(
        uint256 batchId,
        Batch calldata batch,
        uint256 index,
        WorkReceipt calldata leaf,
        bytes32[] calldata proof
    ) internal view {
        require(_verify(batch.root, batch.count, index, _leafHash(leaf), proof), InvalidProof(batchId, index));
    }

    function _leafHash(WorkReceipt calldata r) internal view returns (bytes32) {
        // Every field is static, so abi.encode(typehash, r) is EIP-712's encodeData exactly.
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(WORK_RECEIPT_TYPEHASH, r)));
        return keccak256(abi.encode(digest));
    }

    /// @dev Positional inclusion: exactly ceil(log2(count)) siblings, bit i of `index` says
    /// whether the node is the right child at level i. The caller checks index < count.
    function _verify(bytes32 root, uint256 count, uint256 index, bytes32 leaf, bytes32[] calldata proof)
        internal
        pure
        returns (bool)
    {
        if (proof.length != Math.log2(count, Math.Rounding.Ceil)) return false;
        bytes32 node = leaf;
        for (uint256 i; i < proof.length; ++i) {
            node = (index >> i) & 1 == 0
                ? Hashes.efficientKeccak256(node, proof[i])
                : Hashes.efficientKeccak256(proof[i], node);
        }
        return node == root;
    }

    function _horizon(Params storage p) internal view returns (uint256) {
        return uint256(p.challengeWindow) + 2 * uint256(p.revealWindow) + _disputeDuration(p);
    }

    function _pullExact(address from, uint256 amount) internal {
        uint256 before = _payment.balanceOf(address(this));
        _payment.safeTransferFrom(from, address(this), amount);
        uint256 received = _payment.balanceOf(address(this)) - before;
        require(received == amount, TokenTransferShortfall(amount, received));
    }

    /// @dev The leaf dispute's voting window must hold at least the market's commit and reveal
    /// phases (the committee game both paths share).
    function _setParams(Params memory p) internal {
        IJobMarket.Params memory m = _market.params();
        require(
            p.treasury != address(0) && p.challengeWindow != 0 && p.revealWindow != 0
                && p.resolveWindow >= uint256(m.commitPeriod) + m.revealPeriod && p.penaltyBps <= BPS
                && p.challengerRewardBps <= BPS,
            InvalidParameter()
        );
        _params = p;
        _escalationPeriod = m.escalationPeriod;
        emit ParamsSet(p);
    }
}
