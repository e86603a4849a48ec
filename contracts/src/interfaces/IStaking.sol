// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Hearth provider staking
/// @notice Providers register, stake the staking token, and serve models. Stake is slashable
/// until it is withdrawn: requested unbonding keeps it slashable for the unbonding period, and
/// collateral locked by open jobs cannot be unbonded at all.
/// @dev Conservation: for every provider, deposited = staked + unbonding + slashed + withdrawn,
/// and this contract's token balance equals the sum of staked + unbonding over providers.
interface IStaking {
    struct ProviderInfo {
        uint96 staked;
        uint96 locked;
        uint96 unbonding;
        uint40 unbondReadyAt;
        uint40 jailedUntil;
        bool registered;
        string endpoint;
        string region;
        string gpuClass;
    }

    error AlreadyRegistered(address provider);
    error NotRegistered(address provider);
    error ZeroAmount();
    error InsufficientFreeStake(address provider, uint256 requested, uint256 free);
    error NothingUnbonding(address provider);
    error UnbondingNotReady(address provider, uint256 readyAt);
    error OnlyMarket(address caller);
    error ProviderNotActive(address provider);
    error ModelNotServed(address provider, bytes32 modelId);
    error CollateralUnderflow(address provider, uint256 amount, uint256 locked);
    error InvalidParameter();
    error OnlySettlement(address caller);
    error SettlementAlreadySet();
    error StakeLocked(address provider, uint256 until);

    event ProviderRegistered(address indexed provider, string endpoint, string region, string gpuClass);
    event ProviderUpdated(address indexed provider, string endpoint, string region, string gpuClass);
    event ModelServingSet(address indexed provider, bytes32 indexed modelId, bool serving);
    /// @param total the provider's staked amount after the deposit
    event Staked(address indexed provider, uint256 amount, uint256 total);
    event UnbondRequested(address indexed provider, uint256 amount, uint256 unbonding, uint256 readyAt);
    event StakeWithdrawn(address indexed provider, uint256 amount);
    /// @param fromStaked the part taken from staked, the rest was taken from unbonding
    event Slashed(
        address indexed provider, address indexed recipient, uint256 amount, uint256 fromStaked, uint256 jailedUntil
    );
    event ParametersSet(uint256 minStake, uint256 unbondingPeriod, uint256 jailPeriod);
    event SettlementSet(address settlement);

    /// @notice Registers the caller as a provider.
    function register(string calldata endpoint, string calldata region, string calldata gpuClass) external;
    /// @notice Updates the caller's metadata.
    function updateProvider(string calldata endpoint, string calldata region, string calldata gpuClass) external;
    /// @notice Declares whether the caller serves `modelId`; only serving providers may claim its jobs.
    function setServing(bytes32 modelId, bool serving) external;
    /// @notice Stakes (or adds) `amount` staking tokens; needs an allowance.
    function stake(uint256 amount) external;
    /// @notice Moves `amount` of free stake (staked minus locked) into unbonding and restarts the
    /// unbonding clock for everything unbonding.
    function requestUnbond(uint256 amount) external;
    /// @notice Withdraws everything unbonding once the unbonding period has passed and no batch
    /// of the caller is challengeable any more (see `lockedUntil`).
    function withdraw() external;

    /// @notice Locks collateral for a claimed job. Market only. Emits nothing: the market's
    /// `JobClaimed` carries the amount (and its `JobFinalized`/`JobRefunded` the release). Reverts unless the provider is
    /// active, serves the model and has enough free stake.
    function lockCollateral(address provider, bytes32 modelId, uint256 amount) external;
    /// @notice Releases collateral. Market only.
    function unlockCollateral(address provider, uint256 amount) external;
    /// @notice Slashes up to `amount` (staked first, then unbonding) to `recipient` and jails
    /// the provider. Market or settlement only. Returns what was actually slashed.
    function slash(address provider, uint256 amount, address recipient, bool jail) external returns (uint256);

    /// @notice Binds the batch settlement contract (once): it may extend stake locks and slash.
    /// Owner only.
    function setSettlement(address settlement) external;
    /// @notice Keeps the provider's stake from being withdrawn before `until` (a lock only ever
    /// grows). Settlement only; emits nothing (the settlement's `BatchCommitted` carries it).
    function extendLock(address provider, uint256 until) external;

    /// @notice Until when `withdraw` is refused for the provider (batches still challengeable).
    function lockedUntil(address provider) external view returns (uint256);
    function settlement() external view returns (address);
    /// @notice Whether the provider is registered, not jailed and has at least the minimum stake.
    function isActive(address provider) external view returns (bool);
    function serves(address provider, bytes32 modelId) external view returns (bool);
    function getProvider(address provider) external view returns (ProviderInfo memory);
    function providerCount() external view returns (uint256);
    function providerAt(uint256 index) external view returns (address);
    function minStake() external view returns (uint256);
    function unbondingPeriod() external view returns (uint256);
    function jailPeriod() external view returns (uint256);
    function stakingToken() external view returns (address);
    function market() external view returns (address);
}
