// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title ModelRegistry
/// @notice See `IModelRegistry`.
contract ModelRegistry is IModelRegistry, Ownable2Step {
    mapping(bytes32 modelId => Model) private _models;
    mapping(bytes32 modelId => mapping(bytes32 runtimeHash => bool)) private _runtimes;
    mapping(bytes32 gpuClass => bool) private _classes;

    /// @param owner_ governance
    constructor(address owner_) Ownable(owner_) {}

    /// @inheritdoc IModelRegistry
    function registerModel(bytes32 modelId, bytes32 runtimeHash, uint128 pricePerUnit, string calldata name)
        external
        onlyOwner
    {
        require(modelId != bytes32(0), ZeroModelId());
        require(pricePerUnit != 0, ZeroPrice());
        require(_models[modelId].pricePerUnit == 0, ModelAlreadyRegistered(modelId));
        _models[modelId] = Model(runtimeHash, pricePerUnit, true, name);
        emit ModelRegistered(modelId, runtimeHash, pricePerUnit, name);
        _setRuntime(modelId, runtimeHash, true);
    }

    /// @inheritdoc IModelRegistry
    function updateModel(bytes32 modelId, bytes32 runtimeHash, uint128 pricePerUnit, bool active)
        external
        onlyOwner
    {
        Model storage m = _models[modelId];
        require(m.pricePerUnit != 0, UnknownModel(modelId));
        require(pricePerUnit != 0, ZeroPrice());
        m.runtimeHash = runtimeHash;
        m.pricePerUnit = pricePerUnit;
        m.active = active;
        emit ModelUpdated(modelId, runtimeHash, pricePerUnit, active);
        if (!_runtimes[modelId][runtimeHash]) _setRuntime(modelId, runtimeHash, true);
    }

    /// @inheritdoc IModelRegistry
    function setRuntime(bytes32 modelId, bytes32 runtimeHash, bool listed) external onlyOwner {
        require(_models[modelId].pricePerUnit != 0, UnknownModel(modelId));
        _setRuntime(modelId, runtimeHash, listed);
    }

    /// @inheritdoc IModelRegistry
    function setNumericsClass(bytes32 gpuClass, bool listed) external onlyOwner {
        _classes[gpuClass] = listed;
        emit NumericsClassListed(gpuClass, listed);
    }

    /// @notice Disabled: reverts with `OwnershipCannotBeRenounced`.
    function renounceOwnership() public pure override {
        revert OwnershipCannotBeRenounced();
    }

    /// @inheritdoc IModelRegistry
    function getModel(bytes32 modelId) external view returns (Model memory) {
        Model memory m = _models[modelId];
        require(m.pricePerUnit != 0, UnknownModel(modelId));
        return m;
    }

    /// @inheritdoc IModelRegistry
    function activePrice(bytes32 modelId) external view returns (uint128) {
        Model storage m = _models[modelId];
        require(m.active, UnknownModel(modelId));
        return m.pricePerUnit;
    }

    /// @inheritdoc IModelRegistry
    function priceOf(bytes32 modelId) external view returns (uint128 price) {
        price = _models[modelId].pricePerUnit;
        require(price != 0, UnknownModel(modelId));
    }

    /// @inheritdoc IModelRegistry
    function isRuntimeListed(bytes32 modelId, bytes32 runtimeHash) external view returns (bool) {
        return _runtimes[modelId][runtimeHash];
    }

    /// @inheritdoc IModelRegistry
    function isNumericsClass(bytes32 gpuClass) external view returns (bool) {
        return _classes[gpuClass];
    }

    /// @inheritdoc IModelRegistry
    function checkReceipt(bytes32 modelId, bytes32 runtimeHash, bytes32 gpuClass) external view {
        require(_runtimes[modelId][runtimeHash], RuntimeNotListed(modelId, runtimeHash));
        require(_classes[gpuClass], NumericsClassNotListed(gpuClass));
    }

    function _setRuntime(bytes32 modelId, bytes32 runtimeHash, bool listed) internal {
        _runtimes[modelId][runtimeHash] = listed;
        emit RuntimeListed(modelId, runtimeHash, listed);
    }
}
