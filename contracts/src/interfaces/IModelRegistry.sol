// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Hearth model registry
/// @notice Models are identified by the content hash of their weights and tokenizer, so two
/// parties that agree on a model id agree on the exact bytes they run. Governance lists, per
/// model, the runtimes (kernel builds) whose outputs verifiers reproduce bit for bit, and,
/// globally, the numerics classes (GPU classes whose arithmetic gives identical outputs) that
/// receipts may name. A receipt naming an unlisted runtime or class is refused by the market,
/// so every accepted receipt can be re-executed by a committee drawn from its class.
interface IModelRegistry {
    /// @notice A registered model.
    /// @param runtimeHash the reference runtime (kernel build) verifiers re-execute with; it is
    /// always listed for the model (see `isRuntimeListed`)
    /// @param pricePerUnit payment-token wei per unit (token processed)
    /// @param active whether new jobs may be posted for it
    /// @param name a human-readable name
    struct Model {
        bytes32 runtimeHash;
        uint128 pricePerUnit;
        bool active;
        string name;
    }

    /// @notice `registerModel` for a model id that is already registered.
    error ModelAlreadyRegistered(bytes32 modelId);
    /// @notice The model was never registered (or, for `activePrice`, is inactive).
    error UnknownModel(bytes32 modelId);
    /// @notice A zero model id.
    error ZeroModelId();
    /// @notice A zero price per unit.
    error ZeroPrice();
    /// @notice A receipt named a runtime that governance has not listed for the model.
    error RuntimeNotListed(bytes32 modelId, bytes32 runtimeHash);
    /// @notice A receipt named a numerics class that governance has not listed.
    error NumericsClassNotListed(bytes32 gpuClass);
    /// @notice `renounceOwnership` is disabled: governance must always exist.
    error OwnershipCannotBeRenounced();

    /// @notice Emitted when governance registers a model (its runtime is listed with it).
    event ModelRegistered(bytes32 indexed modelId, bytes32 runtimeHash, uint128 pricePerUnit, string name);
    /// @notice Emitted when a model's reference runtime, price or status changes (the new
    /// reference runtime is listed with it).
    event ModelUpdated(bytes32 indexed modelId, bytes32 runtimeHash, uint128 pricePerUnit, bool active);
    /// @notice Emitted when a runtime is listed or delisted for a model.
    event RuntimeListed(bytes32 indexed modelId, bytes32 indexed runtimeHash, bool listed);
    /// @notice Emitted when a numerics class is listed or delisted.
    event NumericsClassListed(bytes32 indexed gpuClass, bool listed);

    /// @notice Registers a model under its content hash and lists `runtimeHash` for it. Owner only.
    /// @param modelId content hash of weights and tokenizer (non-zero)
    /// @param runtimeHash the reference runtime
    /// @param pricePerUnit payment-token wei per unit (non-zero)
    /// @param name a human-readable name
    function registerModel(bytes32 modelId, bytes32 runtimeHash, uint128 pricePerUnit, string calldata name) external;

    /// @notice Updates a model's reference runtime (listing it), price and status. Owner only.
    /// @dev A price change applies to jobs posted after it: a job snapshots the price at posting.
    /// @param modelId a registered model
    /// @param runtimeHash the new reference runtime (listed by this call; others stay listed)
    /// @param pricePerUnit payment-token wei per unit (non-zero)
    /// @param active whether new jobs may be posted
    function updateModel(bytes32 modelId, bytes32 runtimeHash, uint128 pricePerUnit, bool active) external;

    /// @notice Lists or delists a runtime for a registered model. Owner only. Delisting affects
    /// receipts submitted after it (receipts already accepted stand).
    /// @param modelId a registered model
    /// @param runtimeHash the runtime
    /// @param listed whether receipts may name it
    function setRuntime(bytes32 modelId, bytes32 runtimeHash, bool listed) external;

    /// @notice Lists or delists a numerics class. Owner only.
    /// @param gpuClass the class as a left-aligned, zero-padded bytes32 (e.g. "cpu")
    /// @param listed whether receipts may name it
    function setNumericsClass(bytes32 gpuClass, bool listed) external;

    /// @notice Returns a model; reverts with `UnknownModel` if it was never registered.
    /// @param modelId the model
    function getModel(bytes32 modelId) external view returns (Model memory);

    /// @notice Returns the price per unit of an active model; reverts with `UnknownModel` if
    /// unknown or inactive. Used when a job is posted.
    /// @param modelId the model
    function activePrice(bytes32 modelId) external view returns (uint128);

    /// @notice Returns the price per unit of a registered model, active or not; reverts with
    /// `UnknownModel` if unknown.
    /// @param modelId the model
    function priceOf(bytes32 modelId) external view returns (uint128 price);

    /// @notice Whether `runtimeHash` is listed for `modelId`.
    function isRuntimeListed(bytes32 modelId, bytes32 runtimeHash) external view returns (bool);

    /// @notice Whether `gpuClass` is a listed numerics class.
    function isNumericsClass(bytes32 gpuClass) external view returns (bool);

    /// @notice Reverts with `RuntimeNotListed` or `NumericsClassNotListed` unless a receipt
    /// naming this runtime and class is acceptable for the model. The market calls it once per
    /// receipt.
    /// @param modelId the job's model
    /// @param runtimeHash the receipt's runtime
    /// @param gpuClass the receipt's numerics class
    function checkReceipt(bytes32 modelId, bytes32 runtimeHash, bytes32 gpuClass) external view;
}
