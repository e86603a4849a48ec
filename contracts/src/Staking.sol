// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IStaking} from "./interfaces/IStaking.sol";

/// @title Staking
/// @notice See `IStaking`, which documents the eligible sets (a Fenwick tree per model and class).
contract Staking is IStaking, Ownable2Step, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @notice The most models one provider may serve at once (bounds the work of a stake change).
    uint256 public constant MAX_MODELS_PER_PROVIDER = 8;
    /// @notice Slashes (of any non-zero amount) that jail a provider.
    uint256 public constant STRIKE_LIMIT = 3;

    /// @dev Slot 0 holds everything `lockCollateral` reads and writes.
    struct Provider {
        uint96 staked;
        uint96 locked;
        uint40 jailedUntil;
        bool registered;
        uint8 strikes;
        uint96 unbonding;
        uint40 unbondReadyAt;
    }

    /// @dev One slot: read together.
    struct Config {
        uint96 minStake;
        uint40 unbondingPeriod;
        uint40 jailPeriod;
    }

    struct Meta {
        string endpoint;
        string region;
        string gpuClass;
    }

    /// @dev A provider's entry for one model: its 1-based index in `_models`, its slot in the
    /// eligible set (0: not a member) and its weight there. One slot.
    struct Serving {
        uint8 index;
        uint32 slot;
        uint96 weight;
    }

    /// @dev An eligible set: a Fenwick tree over slots 1..size. `tree[i]` holds the weight sum of
    /// slots (i - lowbit(i), i]; `at[i]` the member in slot i (0 when free).
    struct Pool {
        uint32 size;
        uint32 members;
        uint128 total;
        uint32[] free;
        mapping(uint256 slot => uint256) tree;
        mapping(uint256 slot => address) at;
    }

    IERC20 private immutable _token;
    /// @dev Immutable to save a storage read on every lock; the deployer computes the market's
    /// address before deploying it.
    address private immutable _market;

    Config private _config;
    mapping(address provider => Provider) private _providers;
    mapping(address provider => Meta) private _meta;
    mapping(address provider => bytes32) private _class;
    mapping(address provider => bytes32[]) private _models;
    mapping(address provider => mapping(bytes32 modelId => Serving)) private _serving;
    mapping(bytes32 poolKey => Pool) private _pools;
    /// @dev Batch settlement (set once by the owner): may slash and extend stake locks.
    address private _settlement;
    mapping(address provider => uint256) private _lockedUntil;

    modifier onlyMarket() {
        require(msg.sender == _market, OnlyMarket(msg.sender));
        _;
    }

    /// @dev The market or the batch settlement (both run the dispute game, which locks and
    /// unlocks committee members' bonds).
    modifier onlyGame() {
        require(
            msg.sender == _market || (msg.sender == _settlement && msg.sender != address(0)), OnlyMarket(msg.sender)
        );
        _;
    }

    /// @param owner_ governance
    /// @param token_ the staking token
    /// @param market_ the market (the only caller of lock, unlock and slash)
    /// @param minStake_ staking-token wei needed to register and be eligible
    /// @param unbondingPeriod_ seconds between `requestUnbond` and `withdraw`
    /// @param jailPeriod_ seconds a jailed provider stays out of every eligible set
    constructor(
        address owner_,
        IERC20 token_,
        address market_,
        uint256 minStake_,
        uint256 unbondingPeriod_,
        uint256 jailPeriod_
    ) Ownable(owner_) {
        require(market_ != address(0), InvalidParameter());
        _token = token_;
        _market = market_;
        _setParameters(minStake_, unbondingPeriod_, jailPeriod_);
    }

    /// @notice Sets the minimum stake, unbonding period and jail period. Owner only. A new
    /// minimum applies to each member at its next change or `refresh`.
    function setParameters(uint256 minStake_, uint256 unbondingPeriod_, uint256 jailPeriod_) external onlyOwner {
        _setParameters(minStake_, unbondingPeriod_, jailPeriod_);
    }

    /// @notice Disabled: reverts with `OwnershipCannotBeRenounced`.
    function renounceOwnership() public pure override {
        revert OwnershipCannotBeRenounced();
    }

    /// @inheritdoc IStaking
    function setSettlement(address settlement_) external onlyOwner {
        require(_settlement == address(0), SettlementAlreadySet());
        require(settlement_ != address(0), InvalidParameter());
        _settlement = settlement_;
        emit SettlementSet(settlement_);
    }

    /// @inheritdoc IStaking
    function extendLock(address provider, uint256 until) external {
        require(msg.sender == _settlement && msg.sender != address(0), OnlySettlement(msg.sender));
        if (until > _lockedUntil[provider]) _lockedUntil[provider] = until;
    }

    /// @inheritdoc IStaking
    function register(string calldata endpoint, string calldata region, string calldata gpuClass, uint256 amount)
        external
        nonReentrant
    {
        Provider storage p = _providers[msg.sender];
        require(!p.registered, AlreadyRegistered(msg.sender));
        require(amount >= _config.minStake, StakeBelowMinimum(amount, _config.minStake));
        p.registered = true;
        _meta[msg.sender] = Meta(endpoint, region, gpuClass);
        _class[msg.sender] = _classKey(gpuClass);
        emit ProviderRegistered(msg.sender, endpoint, region, gpuClass);
        _deposit(p, amount);
    }

    /// @inheritdoc IStaking
    function updateProvider(string calldata endpoint, string calldata region, string calldata gpuClass) external {
        require(_providers[msg.sender].registered, NotRegistered(msg.sender));
        bytes32 cls = _classKey(gpuClass);
        _meta[msg.sender] = Meta(endpoint, region, gpuClass);
        emit ProviderUpdated(msg.sender, endpoint, region, gpuClass);
        if (cls != _class[msg.sender]) {
            _syncWeight(msg.sender, 0);
            _class[msg.sender] = cls;
            _sync(msg.sender);
        }
    }

    /// @inheritdoc IStaking
    function setServing(bytes32 modelId, bool serving) external {
        require(_providers[msg.sender].registered, NotRegistered(msg.sender));
        Serving storage s = _serving[msg.sender][modelId];
        bytes32[] storage models = _models[msg.sender];
        if (serving && s.index == 0) {
            require(models.length < MAX_MODELS_PER_PROVIDER, TooManyModels(msg.sender, MAX_MODELS_PER_PROVIDER));
            models.push(modelId);
            s.index = uint8(models.length);
            emit ModelServingSet(msg.sender, modelId, true);
            _place(msg.sender, modelId, _class[msg.sender], _weight(msg.sender));
        } else if (!serving && s.index != 0) {
            _place(msg.sender, modelId, _class[msg.sender], 0);
            uint256 i = s.index - 1;
            uint256 last = models.length - 1;
            if (i != last) {
                bytes32 moved = models[last];
                models[i] = moved;
                _serving[msg.sender][moved].index = uint8(i + 1);
            }
            models.pop();
            delete _serving[msg.sender][modelId];
            emit ModelServingSet(msg.sender, modelId, false);
        } else {
            emit ModelServingSet(msg.sender, modelId, serving);
        }
    }

    /// @inheritdoc IStaking
    function stake(uint256 amount) external nonReentrant {
        Provider storage p = _providers[msg.sender];
        require(p.registered, NotRegistered(msg.sender));
        require(amount != 0, ZeroAmount());
        _deposit(p, amount);
    }

    /// @inheritdoc IStaking
    function requestUnbond(uint256 amount) external {
        Provider storage p = _providers[msg.sender];
        require(amount != 0, ZeroAmount());
        uint256 free = _free(p);
        require(amount <= free, InsufficientFreeStake(msg.sender, amount, free));
        // Cannot underflow: amount <= staked - locked <= staked.
        unchecked {
            p.staked -= uint96(amount);
        }
        p.unbonding += uint96(amount);
        uint256 readyAt = block.timestamp + _config.unbondingPeriod;
        p.unbondReadyAt = readyAt.toUint40();
        emit UnbondRequested(msg.sender, amount, p.unbonding, readyAt);
        _sync(msg.sender);
    }

    /// @inheritdoc IStaking
    function withdraw() external nonReentrant {
        Provider storage p = _providers[msg.sender];
        uint256 amount = p.unbonding;
        require(amount != 0, NothingUnbonding(msg.sender));
        require(block.timestamp >= p.unbondReadyAt, UnbondingNotReady(msg.sender, p.unbondReadyAt));
        uint256 until = _lockedUntil[msg.sender];
        require(block.timestamp >= until, StakeLocked(msg.sender, until));
        p.unbonding = 0;
        emit StakeWithdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IStaking
    function refresh(address provider) external {
        _sync(provider);
    }

    /// @inheritdoc IStaking
    function lockCollateral(address provider, bytes32 modelId, uint256 amount) external onlyMarket {
        Provider storage p = _providers[provider];
        Serving storage s = _serving[provider][modelId];
        if (s.slot == 0) {
            require(s.index != 0, ModelNotServed(provider, modelId));
            revert ProviderNotActive(provider);
        }
        _lock(p, provider, amount);
    }

    /// @inheritdoc IStaking
    function lockBond(address provider, uint256 amount) external onlyGame {
        _lock(_providers[provider], provider, amount);
    }

    /// @inheritdoc IStaking
    function unlockCollateral(address provider, uint256 amount) external onlyGame {
        Provider storage p = _providers[provider];
        require(amount <= p.locked, CollateralUnderflow(provider, amount, p.locked));
        // Cannot underflow: checked just above.
        unchecked {
            p.locked -= uint96(amount);
        }
    }

    /// @inheritdoc IStaking
    function slash(address provider, uint256 unlock, uint256 amount, address recipient, bool jail)
        external
        nonReentrant
        returns (uint256 slashed)
    {
        require(
            msg.sender == _market || (msg.sender == _settlement && msg.sender != address(0)), OnlyMarket(msg.sender)
        );
        Provider storage p = _providers[provider];
        require(unlock <= p.locked, CollateralUnderflow(provider, unlock, p.locked));
        unchecked {
            p.locked -= uint96(unlock);
        }
        uint256 free = _free(p);
        uint256 fromStaked = amount < free ? amount : free;
        uint256 fromUnbonding = amount - fromStaked;
        if (fromUnbonding > p.unbonding) fromUnbonding = p.unbonding;
        // Cannot underflow: both parts are capped by the balances they come from.
        unchecked {
            p.staked -= uint96(fromStaked);
            p.unbonding -= uint96(fromUnbonding);
        }
        slashed = fromStaked + fromUnbonding;
        uint256 strikes = p.strikes;
        if (amount != 0) ++strikes;
        uint256 jailedUntil = p.jailedUntil;
        if (jail || strikes >= STRIKE_LIMIT) {
            jailedUntil = block.timestamp + _config.jailPeriod;
            p.jailedUntil = jailedUntil.toUint40();
            strikes = 0;
        }
        p.strikes = uint8(strikes);
        emit Slashed(provider, recipient, slashed, fromStaked, jailedUntil, strikes);
        _sync(provider);
        if (slashed != 0) _token.safeTransfer(recipient, slashed);
    }

    // ---------------------------------------------------------------- views

    /// @dev The excluded parties' slots (lowest first), weights, and where their weight starts
    /// in the full range [0, total).
    struct Exclusion {
        uint256 slotA;
        uint256 weightA;
        uint256 startA;
        uint256 slotB;
        uint256 weightB;
        uint256 startB;
    }

    /// @inheritdoc IStaking
    function drawCommittee(
        bytes32 modelId,
        bytes32 gpuClass,
        uint256 seed,
        uint256 seats,
        uint256 minDistinct,
        address excludeA,
        address excludeB
    ) external view returns (address[] memory members) {
        Pool storage pl = _pools[_poolKey(modelId, gpuClass)];
        Exclusion memory x = _exclusion(pl, modelId, gpuClass, excludeA, excludeB);
        uint256 distinct = pl.members - (x.slotA != 0 ? 1 : 0) - (x.slotB != 0 ? 1 : 0);
        if (distinct < minDistinct || distinct == 0) return new address[](0);
        uint256 avail = pl.total - x.weightA - x.weightB;
        members = new address[](seats);
        for (uint256 i; i < seats; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i))) % avail;
            // Map [0, avail) onto [0, total) minus the excluded ranges, lowest range first.
            if (x.slotA != 0 && r >= x.startA) r += x.weightA;
            if (x.slotB != 0 && r >= x.startB) r += x.weightB;
            members[i] = pl.at[_find(pl, r)];
        }
    }

    function _exclusion(Pool storage pl, bytes32 modelId, bytes32 gpuClass, address a, address b)
        internal
        view
        returns (Exclusion memory x)
    {
        (x.slotA, x.weightA) = _memberSlot(a, modelId, gpuClass);
        if (b != a) (x.slotB, x.weightB) = _memberSlot(b, modelId, gpuClass);
        if (x.slotA == 0 || (x.slotB != 0 && x.slotB < x.slotA)) {
            (x.slotA, x.weightA, x.slotB, x.weightB) = (x.slotB, x.weightB, x.slotA, x.weightA);
        }
        if (x.slotA != 0) x.startA = _prefix(pl, x.slotA - 1);
        if (x.slotB != 0) x.startB = _prefix(pl, x.slotB - 1);
    }

    /// @inheritdoc IStaking
    function lockedUntil(address provider) external view returns (uint256) {
        return _lockedUntil[provider];
    }

    /// @inheritdoc IStaking
    function settlement() external view returns (address) {
        return _settlement;
    }

    /// @inheritdoc IStaking
    function isActive(address provider) external view returns (bool) {
        Provider storage p = _providers[provider];
        return p.registered && p.staked >= _config.minStake && block.timestamp >= p.jailedUntil;
    }

    /// @inheritdoc IStaking
    function serves(address provider, bytes32 modelId) external view returns (bool) {
        return _serving[provider][modelId].index != 0;
    }

    /// @inheritdoc IStaking
    function isEligible(address provider, bytes32 modelId) external view returns (bool) {
        return _serving[provider][modelId].slot != 0;
    }

    /// @inheritdoc IStaking
    function eligibleSet(bytes32 modelId, bytes32 gpuClass) external view returns (uint256 members, uint256 weight) {
        Pool storage pl = _pools[_poolKey(modelId, gpuClass)];
        return (pl.members, pl.total);
    }

    /// @inheritdoc IStaking
    function classOf(address provider) external view returns (bytes32) {
        return _class[provider];
    }

    /// @inheritdoc IStaking
    function getProvider(address provider) external view returns (ProviderInfo memory) {
        Provider memory p = _providers[provider];
        Meta memory m = _meta[provider];
        return ProviderInfo(
            p.staked,
            p.locked,
            p.unbonding,
            p.unbondReadyAt,
            p.jailedUntil,
            p.registered,
            m.endpoint,
            m.region,
            m.gpuClass,
            p.strikes
        );
    }

    /// @inheritdoc IStaking
    function minStake() external view returns (uint256) {
        return _config.minStake;
    }

    /// @inheritdoc IStaking
    function unbondingPeriod() external view returns (uint256) {
        return _config.unbondingPeriod;
    }

    /// @inheritdoc IStaking
    function jailPeriod() external view returns (uint256) {
        return _config.jailPeriod;
    }

    /// @inheritdoc IStaking
    function stakingToken() external view returns (address) {
        return address(_token);
    }

    /// @inheritdoc IStaking
    function market() external view returns (address) {
        return _market;
    }

    // ---------------------------------------------------------------- internal

    function _setParameters(uint256 minStake_, uint256 unbondingPeriod_, uint256 jailPeriod_) internal {
        require(minStake_ != 0 && unbondingPeriod_ != 0, InvalidParameter());
        _config = Config(minStake_.toUint96(), unbondingPeriod_.toUint40(), jailPeriod_.toUint40());
        emit ParametersSet(minStake_, unbondingPeriod_, jailPeriod_);
    }

    function _deposit(Provider storage p, uint256 amount) internal {
        uint256 before = _token.balanceOf(address(this));
        _token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = _token.balanceOf(address(this)) - before;
        require(received == amount, InsufficientFreeStake(msg.sender, amount, received));
        p.staked += amount.toUint96();
        emit Staked(msg.sender, amount, p.staked);
        _sync(msg.sender);
    }

    function _lock(Provider storage p, address provider, uint256 amount) internal {
        uint256 free = _free(p);
        require(amount <= free, InsufficientFreeStake(provider, amount, free));
        // Cannot overflow: locked + amount <= staked, a uint96.
        unchecked {
            p.locked += uint96(amount);
        }
    }

    /// @dev Stake that backs no open job or bond. A slash never takes locked stake, so
    /// `locked <= staked` always holds.
    function _free(Provider storage p) internal view returns (uint256) {
        return p.staked - p.locked;
    }

    /// @dev The provider's weight in its sets: its stake when eligible, else 0.
    function _weight(address a) internal view returns (uint96) {
        Provider storage p = _providers[a];
        bool ok = p.registered && p.staked >= _config.minStake && block.timestamp >= p.jailedUntil;
        return ok ? p.staked : 0;
    }

    function _sync(address a) internal {
        _syncWeight(a, _weight(a));
    }

    function _syncWeight(address a, uint96 weight) internal {
        bytes32[] storage models = _models[a];
        bytes32 cls = _class[a];
        uint256 n = models.length;
        for (uint256 i; i < n; ++i) {
            _place(a, models[i], cls, weight);
        }
    }

    /// @dev Puts `a` in the set of (modelId, cls) with `weight` (0: takes it out).
    function _place(address a, bytes32 modelId, bytes32 cls, uint96 weight) internal {
        Serving storage s = _serving[a][modelId];
        uint256 slot = s.slot;
        uint256 old = s.weight;
        if (slot == 0 && weight == 0) return;
        if (old == weight && slot != 0) return;
        Pool storage pl = _pools[_poolKey(modelId, cls)];
        if (slot == 0) {
            uint256 nFree = pl.free.length;
            if (nFree != 0) {
                slot = pl.free[nFree - 1];
                pl.free.pop();
                _add(pl, slot, weight);
            } else {
                slot = pl.size + 1;
                pl.size = uint32(slot);
                // A new last slot: its node sums the slots it covers below it plus itself.
                uint256 v = weight;
                uint256 low = slot - _lowbit(slot);
                for (uint256 j = slot - 1; j > low; j -= _lowbit(j)) {
                    v += pl.tree[j];
                }
                pl.tree[slot] = v;
            }
            pl.at[slot] = a;
            ++pl.members;
            pl.total += weight;
            s.slot = uint32(slot);
        } else if (weight == 0) {
            _sub(pl, slot, old);
            pl.at[slot] = address(0);
            pl.free.push(uint32(slot));
            --pl.members;
            pl.total -= uint128(old);
            s.slot = 0;
        } else if (weight > old) {
            _add(pl, slot, weight - old);
            pl.total += uint128(weight - old);
        } else {
            _sub(pl, slot, old - weight);
            pl.total -= uint128(old - weight);
        }
        s.weight = weight;
        emit EligibilityChanged(a, modelId, cls, weight);
    }

    function _add(Pool storage pl, uint256 i, uint256 w) internal {
        uint256 size = pl.size;
        for (; i <= size; i += _lowbit(i)) {
            pl.tree[i] += w;
        }
    }

    function _sub(Pool storage pl, uint256 i, uint256 w) internal {
        uint256 size = pl.size;
        for (; i <= size; i += _lowbit(i)) {
            pl.tree[i] -= w;
        }
    }

    /// @dev Sum of the weights of slots 1..i.
    function _prefix(Pool storage pl, uint256 i) internal view returns (uint256 sum) {
        for (; i != 0; i -= _lowbit(i)) {
            sum += pl.tree[i];
        }
    }

    /// @dev The slot whose weight range [prefix(slot-1), prefix(slot)) contains r (r < total).
    function _find(Pool storage pl, uint256 r) internal view returns (uint256) {
        uint256 size = pl.size;
        uint256 pos;
        uint256 step = 1;
        while (step * 2 <= size) step *= 2;
        for (; step != 0; step >>= 1) {
            uint256 next = pos + step;
            if (next <= size) {
                uint256 t = pl.tree[next];
                if (t <= r) {
                    pos = next;
                    r -= t;
                }
            }
        }
        return pos + 1;
    }

    function _memberSlot(address a, bytes32 modelId, bytes32 gpuClass)
        internal
        view
        returns (uint256 slot, uint256 weight)
    {
        if (a == address(0) || _class[a] != gpuClass) return (0, 0);
        Serving storage s = _serving[a][modelId];
        return (s.slot, s.weight);
    }

    function _lowbit(uint256 i) internal pure returns (uint256) {
        unchecked {
            return i & (~i + 1);
        }
    }

    function _poolKey(bytes32 modelId, bytes32 cls) internal pure returns (bytes32) {
        return keccak256(abi.encode(modelId, cls));
    }

    function _classKey(string calldata gpuClass) internal pure returns (bytes32) {
        bytes memory raw = bytes(gpuClass);
        require(raw.length <= 32, GpuClassTooLong(raw.length));
        return bytes32(raw);
    }
}
