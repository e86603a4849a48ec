// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Errors the Hearth contracts raise from the OpenZeppelin code they inherit
/// @notice `JobMarket`, `Staking` and `ModelRegistry` inherit OpenZeppelin contracts that
/// declare these errors; Solidity forbids redeclaring them in the contracts' own interfaces, so
/// they are listed here (and are part of each contract's ABI in the manifest).
interface IOpenZeppelinErrors {
    /// @notice `Ownable` (all three): the caller is not the owner.
    error OwnableUnauthorizedAccount(address account);
    /// @notice `Ownable` (all three): the new owner is the zero address.
    error OwnableInvalidOwner(address owner);
    /// @notice `ReentrancyGuardTransient` (JobMarket, Staking): a reentrant call.
    error ReentrancyGuardReentrantCall();
    /// @notice `Nonces` (JobMarket): a job request whose nonce is not the client's current one.
    error InvalidAccountNonce(address account, uint256 currentNonce);
    /// @notice `SafeERC20` (JobMarket, Staking): a token call failed or returned false.
    error SafeERC20FailedOperation(address token);
    /// @notice `SafeCast` (JobMarket, Staking): a time or amount beyond its field.
    error SafeCastOverflowedUintDowncast(uint8 bits, uint256 value);
}
