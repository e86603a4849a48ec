// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Hearth model registry
/// @notice Models are identified by the content hash of their weights and tokenizer, so two
/// parties that agree on a model id agree on the exact bytes they run.
interface IModelRegistry {
    /// @notice A registered model.
    /// @param runtimeHash the reference runtime (kernel version) verifiers re-execute with
    /// @param pricePerUnit payment-token wei per unit (token processed)
    /// @param active whether new jobs may be posted for it
    /// @param name a human-readable name
    struct Model {
        bytes32 runtimeHash;
        uint128 pricePerUnit;
        bool active;
        string name;
    }

    error ModelAlreadyRegistered(bytes32 modelId);
    error UnknownModel(bytes32 modelId);
    error ZeroModelId();
    error ZeroPrice();

    /// @notice Emitted when governance registers a model.
    event ModelRegistered(
        bytes32 indexed modelId, bytes32 runtimeHash, uint128 pricePerUnit, string name
    );
    /// @notice Emitted when a model's price, runtime or status changes.
    event ModelUpdated(
        bytes32 indexed modelId, bytes32 runtimeHash, uint128 pricePerUnit, bool active
    );

    /// @notice Registers a model under its content hash. Owner only.
    function registerModel(
        bytes32 modelId,
        bytes32 runtimeHash,
        uint128 pricePerUnit,
        string calldata name
    ) external;

    /// @notice Updates a model's runtime hash, price and status. Owner only.
    /// @dev A price change applies to receipts submitted after it, even for jobs posted before;
    /// the client is protected by the job's `maxPayment` cap.
    function updateModel(bytes32 modelId, bytes32 runtimeHash, uint128 pricePerUnit, bool active)
        external;

    /// @notice Returns a model; reverts with `UnknownModel` if it was never registered.
    function getModel(bytes32 modelId) external view returns (Model memory);

    /// @notice Returns the price per unit of an active model; reverts if unknown or inactive.
    /// Used when a job is posted.
    function activePrice(bytes32 modelId) external view returns (uint128);

    /// @notice Returns the price per unit of a registered model, active or not; reverts if
    /// unknown. Used at delivery, so that deactivating a model never strands a claimed job.
    function priceOf(bytes32 modelId) external view returns (uint128);
}
