// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Hearth provider staking
/// @notice Providers register with at least the minimum stake, declare a numerics class (their
/// GPU class) and the models they serve. Stake is slashable until it is withdrawn: requested
/// unbonding keeps it slashable for the unbonding period, and stake locked by the market (job
/// collateral, committee bonds) cannot be unbonded at all.
///
/// Eligible sets. For every (model, numerics class) the contract keeps the set of providers
/// eligible to sit on that model's dispute committees: registered, staked at least `minStake`,
/// not jailed, serving the model, with that class. Each set is a Fenwick (binary indexed) tree
/// over slots weighted by the member's staked amount, maintained on every change that can
/// alter membership or weight (register, stake, unbond, slash, jail, serving, class change,
/// `refresh`). A slot freed by a member that leaves is reused by the next one to join, so the
/// tree is as large as the largest number of simultaneous members: providers that never
/// staked, or left, cost nothing. Inserting, removing or reweighting a member is O(log n)
/// storage writes; drawing one stake-weighted seat is O(log n) storage reads. Nothing ever
/// walks the list of providers. A jailed provider leaves every set when jailed and re-enters
/// through `refresh` once its jail has ended; a change of `minStake` applies to a member at its
/// next change or `refresh` (anyone may call it).
/// @dev Conservation: this contract's token balance equals the sum of staked + unbonding over
/// providers; a slash moves tokens out to its recipient.
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
        uint8 strikes;
    }

    /// @notice `register` by a provider that is registered already.
    error AlreadyRegistered(address provider);
    /// @notice The caller is not a registered provider.
    error NotRegistered(address provider);
    /// @notice A zero amount.
    error ZeroAmount();
    /// @notice `register` with less than the minimum stake.
    error StakeBelowMinimum(uint256 amount, uint256 minStake);
    /// @notice More than the free stake (staked minus locked) was asked for, or a token
    /// delivered less than the amount transferred (`requested` then is the amount, `free` what
    /// arrived).
    error InsufficientFreeStake(address provider, uint256 requested, uint256 free);
    /// @notice `withdraw` with nothing unbonding.
    error NothingUnbonding(address provider);
    /// @notice `withdraw` before the unbonding period has passed.
    error UnbondingNotReady(address provider, uint256 readyAt);
    /// @notice A market-only function called by someone else.
    error OnlyMarket(address caller);
    /// @notice The provider serves the model but is not eligible (below minimum stake, jailed, or
    /// not yet `refresh`ed after its jail).
    error ProviderNotActive(address provider);
    /// @notice The provider does not serve the model.
    error ModelNotServed(address provider, bytes32 modelId);
    /// @notice An unlock larger than the provider's locked stake.
    error CollateralUnderflow(address provider, uint256 amount, uint256 locked);
    /// @notice A GPU class name longer than 32 bytes.
    error GpuClassTooLong(uint256 length);
    /// @notice `setServing(.., true)` beyond `MAX_MODELS_PER_PROVIDER` models.
    error TooManyModels(address provider, uint256 max);
    /// @notice A parameter out of range.
    error InvalidParameter();
    /// @notice `renounceOwnership` is disabled.
    error OwnershipCannotBeRenounced();
    /// @notice A settlement-only function called by someone else.
    error OnlySettlement(address caller);
    /// @notice `setSettlement` after the settlement was bound.
    error SettlementAlreadySet();
    /// @notice `withdraw` while a batch of the provider can still be challenged.
    error StakeLocked(address provider, uint256 until);

    /// @notice A provider registered (its stake is reported by the `Staked` of the same call).
    event ProviderRegistered(address indexed provider, string endpoint, string region, string gpuClass);
    /// @notice A provider changed its metadata; a new class moves it to that class's sets.
    event ProviderUpdated(address indexed provider, string endpoint, string region, string gpuClass);
    /// @notice A provider started or stopped serving a model.
    event ModelServingSet(address indexed provider, bytes32 indexed modelId, bool serving);
    /// @param total the provider's staked amount after the deposit
    event Staked(address indexed provider, uint256 amount, uint256 total);
    /// @param unbonding everything unbonding after the request
    /// @param readyAt unix seconds from which `withdraw` succeeds
    event UnbondRequested(address indexed provider, uint256 amount, uint256 unbonding, uint256 readyAt);
    /// @notice Unbonded stake was paid out.
    event StakeWithdrawn(address indexed provider, uint256 amount);
    /// @notice A slash. `amount` is what was actually taken (never more than asked).
    /// @param fromStaked the part taken from staked, the rest was taken from unbonding
    /// @param jailedUntil the provider's jail end after the slash (unix seconds; 0 if never jailed)
    /// @param strikes the provider's strikes after the slash (reset to 0 when it is jailed)
    event Slashed(
        address indexed provider,
        address indexed recipient,
        uint256 amount,
        uint256 fromStaked,
        uint256 jailedUntil,
        uint256 strikes
    );
    /// @notice A provider's membership of the eligible set of (modelId, gpuClass) changed.
    /// @param weight its stake weight in the set now (0: it left the set)
    event EligibilityChanged(address indexed provider, bytes32 indexed modelId, bytes32 gpuClass, uint256 weight);
    /// @notice Staking parameters (wei, seconds, seconds) took effect.
    event ParametersSet(uint256 minStake, uint256 unbondingPeriod, uint256 jailPeriod);
    event SettlementSet(address settlement);

    /// @notice Registers the caller as a provider and stakes `amount` (at least `minStake`;
    /// needs an allowance).
    /// @param endpoint the provider's public URL
    /// @param region a free-text region
    /// @param gpuClass its numerics class name, at most 32 bytes; receipts name it as the
    /// left-aligned zero-padded bytes32
    /// @param amount staking-token wei to stake, at least `minStake`
    function register(string calldata endpoint, string calldata region, string calldata gpuClass, uint256 amount)
        external;
    /// @notice Updates the caller's metadata; a changed class moves it between eligible sets.
    function updateProvider(string calldata endpoint, string calldata region, string calldata gpuClass) external;
    /// @notice Declares whether the caller serves `modelId` (at most `MAX_MODELS_PER_PROVIDER`).
    /// Only serving, eligible providers may claim its jobs, challenge them and sit on its committees.
    function setServing(bytes32 modelId, bool serving) external;
    /// @notice Stakes (adds) `amount` staking-token wei; needs an allowance.
    function stake(uint256 amount) external;
    /// @notice Moves `amount` of free stake (staked minus locked) into unbonding and restarts the
    /// unbonding clock for everything unbonding. Unbonding stake has no committee weight.
    function requestUnbond(uint256 amount) external;
    /// @notice Withdraws everything unbonding once `block.timestamp >= unbondReadyAt` and no batch
    /// of the caller is challengeable any more (`block.timestamp >= lockedUntil`).
    function withdraw() external;
    /// @notice Re-evaluates `provider`'s membership of its eligible sets (after its jail ended or
    /// `minStake` changed). Anyone may call; a no-op when nothing changed.
    function refresh(address provider) external;

    /// @notice Locks collateral for a claimed job. Market only. Reverts unless the provider is an
    /// eligible member for the model (`ProviderNotActive`, `ModelNotServed`) with enough free stake.
    function lockCollateral(address provider, bytes32 modelId, uint256 amount) external;
    /// @notice Locks a committee member's bond. Market or settlement (both run the dispute game).
    /// Needs free stake only.
    function lockBond(address provider, uint256 amount) external;
    /// @notice Releases locked stake. Market or settlement (the settlement only unlocks the
    /// committee bonds its own disputes locked).
    function unlockCollateral(address provider, uint256 amount) external;
    /// @notice Unlocks `unlock` of the provider's locked stake, then slashes up to `amount` from
    /// its free stake (then from unbonding) to `recipient`. Market or settlement only. Locked stake of other
    /// jobs is never taken, so a slash backed by an unlock of at least its amount is always whole.
    /// Every slash of a non-zero amount is a strike; at `STRIKE_LIMIT` strikes, or when `jail`,
    /// the provider is jailed for `jailPeriod` and its strikes reset.
    /// @return slashed the amount actually taken
    function slash(address provider, uint256 unlock, uint256 amount, address recipient, bool jail)
        external
        returns (uint256 slashed);

    /// @notice Draws `seats` committee seats for (modelId, gpuClass), each seat independently
    /// and weighted by stake, excluding `excludeA` and `excludeB` exactly (their weight is
    /// removed from the draw, so no redraws). Seat i uses keccak256(abi.encode(seed, i)). Returns
    /// an empty array when the set, without the excluded, has fewer than `minDistinct` members.
    /// Gas: O(seats x log n) storage reads, n the largest number of simultaneous members.
    function drawCommittee(
        bytes32 modelId,
        bytes32 gpuClass,
        uint256 seed,
        uint256 seats,
        uint256 minDistinct,
        address excludeA,
        address excludeB
    ) external view returns (address[] memory members);

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
    /// @notice Whether the provider declared it serves the model.
    function serves(address provider, bytes32 modelId) external view returns (bool);
    /// @notice Whether the provider is a member of the eligible set of (modelId, its class).
    function isEligible(address provider, bytes32 modelId) external view returns (bool);
    /// @notice Members and total stake weight of the eligible set of (modelId, gpuClass).
    function eligibleSet(bytes32 modelId, bytes32 gpuClass) external view returns (uint256 members, uint256 weight);
    /// @notice The provider's numerics class as a bytes32.
    function classOf(address provider) external view returns (bytes32);
    /// @notice A provider's stake, locks, unbonding, jail, metadata and strikes.
    function getProvider(address provider) external view returns (ProviderInfo memory);
    /// @notice Staking-token wei needed to register and to be eligible.
    function minStake() external view returns (uint256);
    /// @notice Seconds between `requestUnbond` and the earliest `withdraw`.
    function unbondingPeriod() external view returns (uint256);
    /// @notice Seconds a jailed provider stays out of every eligible set.
    function jailPeriod() external view returns (uint256);
    /// @notice The staking token.
    function stakingToken() external view returns (address);
    /// @notice The market, the only caller of lock, unlock and slash.
    function market() external view returns (address);
}
