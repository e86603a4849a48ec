// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title ITokenReceiver
/// @notice The recipient hook of `CallbackToken` (the shape of ERC-777's `tokensReceived` or
/// ERC-1363's `onTransferReceived`): it hands control to the recipient in the middle of a transfer.
interface ITokenReceiver {
    function onTokenTransfer(address from, uint256 amount) external;
}
