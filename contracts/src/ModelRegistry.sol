// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title ModelRegistry
contract ModelRegistry is IModelRegistry, Ownable2Step {
    mapping(bytes32 modelId => Model) private _models;

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
}
