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
contract Staking is IStaking, Ownable2Step, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @dev Slot 0 holds everything `lockCollateral` reads and writes.
    struct Provider {
        uint96 staked;
        uint96 locked;
        uint40 jailedUntil;
        bool registered;
        uint96 unbonding;
        uint40 unbondReadyAt;
    }

    /// @dev One slot: read together on every claim.
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

    IERC20 private immutable _token;
    /// @dev Immutable to save a storage read on every lock; the deployer computes the market's
    /// address before deploying it (CREATE address of the deployer's next-but-one nonce).
    address private immutable _market;

    Config private _config;
    mapping(address provider => Provider) private _providers;
    mapping(address provider => Meta) private _meta;
    mapping(address provider => mapping(bytes32 modelId => bool)) private _serves;
    address[] private _providerList;
    /// @dev Batch settlement (set once by the owner): may slash and extend stake locks.
    address private _settlement;
    mapping(address provider => uint256) private _lockedUntil;

    modifier onlyMarket() {
        require(msg.sender == _market, OnlyMarket(msg.sender));
        _;
    }

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

    /// @notice Sets the minimum stake, unbonding period and jail period.
    function setParameters(uint256 minStake_, uint256 unbondingPeriod_, uint256 jailPeriod_) external onlyOwner {
        _setParameters(minStake_, unbondingPeriod_, jailPeriod_);
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
    function register(string calldata endpoint, string calldata region, string calldata gpuClass) external {
        Provider storage p = _providers[msg.sender];
        require(!p.registered, AlreadyRegistered(msg.sender));
        p.registered = true;
        _meta[msg.sender] = Meta(endpoint, region, gpuClass);
        _providerList.push(msg.sender);
        emit ProviderRegistered(msg.sender, endpoint, region, gpuClass);
    }

    /// @inheritdoc IStaking
    function updateProvider(string calldata endpoint, string calldata region, string calldata gpuClass) external {
        require(_providers[msg.sender].registered, NotRegistered(msg.sender));
        _meta[msg.sender] = Meta(endpoint, region, gpuClass);
        emit ProviderUpdated(msg.sender, endpoint, region, gpuClass);
    }

    /// @inheritdoc IStaking
    function setServing(bytes32 modelId, bool serving) external {
        require(_providers[msg.sender].registered, NotRegistered(msg.sender));
        _serves[msg.sender][modelId] = serving;
        emit ModelServingSet(msg.sender, modelId, serving);
    }

    /// @inheritdoc IStaking
    function stake(uint256 amount) external nonReentrant {
        Provider storage p = _providers[msg.sender];
        require(p.registered, NotRegistered(msg.sender));
        require(amount != 0, ZeroAmount());
        uint256 before = _token.balanceOf(address(this));
        _token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = _token.balanceOf(address(this)) - before;
        require(received == amount, InsufficientFreeStake(msg.sender, amount, received));
        p.staked += amount.toUint96();
        emit Staked(msg.sender, amount, p.staked);
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
    function lockCollateral(address provider, bytes32 modelId, uint256 amount) external onlyMarket {
        Provider storage p = _providers[provider];
        require(_isActive(p), ProviderNotActive(provider));
        require(_serves[provider][modelId], ModelNotServed(provider, modelId));
        uint256 free = _free(p);
        require(amount <= free, InsufficientFreeStake(provider, amount, free));
        // Cannot overflow: locked + amount <= staked, a uint96.
        unchecked {
            p.locked += uint96(amount);
        }
    }

    /// @inheritdoc IStaking
    function unlockCollateral(address provider, uint256 amount) external onlyMarket {
        Provider storage p = _providers[provider];
        require(amount <= p.locked, CollateralUnderflow(provider, amount, p.locked));
        // Cannot underflow: checked just above.
        unchecked {
            p.locked -= uint96(amount);
        }
    }

    /// @inheritdoc IStaking
    function slash(address provider, uint256 amount, address recipient, bool jail)
        external
        nonReentrant
        returns (uint256 slashed)
    {
        require(
            msg.sender == _market || (msg.sender == _settlement && msg.sender != address(0)), OnlyMarket(msg.sender)
        );
        Provider storage p = _providers[provider];
        uint256 fromStaked = amount < p.staked ? amount : p.staked;
        uint256 fromUnbonding = amount - fromStaked;
        if (fromUnbonding > p.unbonding) fromUnbonding = p.unbonding;
        // Cannot underflow: both parts are capped by the balances they come from.
        unchecked {
            p.staked -= uint96(fromStaked);
            p.unbonding -= uint96(fromUnbonding);
        }
        // `locked` is left alone: it is exactly the collateral of the provider's open jobs, and
        // each of them unlocks its own share when it ends. Capping it here at what is left staked
        // made those unlocks underflow and stranded the jobs (their escrow could never be paid out
        // or refunded). Until they end, a slash that cut into collateral leaves no free stake.
        slashed = fromStaked + fromUnbonding;
        uint256 jailedUntil = p.jailedUntil;
        if (jail) {
            jailedUntil = block.timestamp + _config.jailPeriod;
            p.jailedUntil = jailedUntil.toUint40();
        }
        emit Slashed(provider, recipient, slashed, fromStaked, jailedUntil);
        if (slashed != 0) _token.safeTransfer(recipient, slashed);
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
        return _isActive(_providers[provider]);
    }

    /// @inheritdoc IStaking
    function serves(address provider, bytes32 modelId) external view returns (bool) {
        return _serves[provider][modelId];
    }

    /// @inheritdoc IStaking
    function getProvider(address provider) external view returns (ProviderInfo memory) {
        Provider memory p = _providers[provider];
        Meta memory m = _meta[provider];
        return ProviderInfo(
            p.staked, p.locked, p.unbonding, p.unbondReadyAt, p.jailedUntil, p.registered, m.endpoint, m.region, m.gpuClass
        );
    }

    /// @inheritdoc IStaking
    function providerCount() external view returns (uint256) {
        return _providerList.length;
    }

    /// @inheritdoc IStaking
    function providerAt(uint256 index) external view returns (address) {
        return _providerList[index];
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

    function _setParameters(uint256 minStake_, uint256 unbondingPeriod_, uint256 jailPeriod_) internal {
        require(minStake_ != 0 && unbondingPeriod_ != 0, InvalidParameter());
        _config = Config(minStake_.toUint96(), unbondingPeriod_.toUint40(), jailPeriod_.toUint40());
        emit ParametersSet(minStake_, unbondingPeriod_, jailPeriod_);
    }

    /// @dev Stake that backs no open job. `locked` exceeds `staked` after a slash that cut into
    /// collateral (see `slash`); nothing is free then.
    function _free(Provider storage p) internal view returns (uint256) {
        (uint256 staked, uint256 locked) = (p.staked, p.locked);
        return staked > locked ? staked - locked : 0;
    }

    function _isActive(Provider storage p) internal view returns (bool) {
        return p.registered && p.staked >= _config.minStake && block.timestamp >= p.jailedUntil;
    }
}
