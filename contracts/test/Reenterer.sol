// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ITokenReceiver} from "./ITokenReceiver.sol";

/// @title Reenterer
/// @notice Test only. An attacker contract: it acts as a client or payee through `execute`, and
/// when a `CallbackToken` transfer reaches it, it calls back into the armed target once. It
/// swallows a failed reentry (a real attacker keeps the outer payout) and records the revert
/// data, so a test can tell which guard stopped it.
contract Reenterer is ITokenReceiver {
    error NotOwner(address caller);

    address private immutable _owner;

    address private _target;
    bytes private _payload;
    bool private _armed;
    bool private _reentered;
    bool private _reentrySucceeded;
    bytes private _reentryError;

    constructor() {
        _owner = msg.sender;
    }

    /// @notice Calls `target` with `data` as this contract, bubbling a revert. Owner only.
    function execute(address target, bytes calldata data) external returns (bytes memory result) {
        require(msg.sender == _owner, NotOwner(msg.sender));
        bool ok;
        (ok, result) = target.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 32), mload(result))
            }
        }
    }

    /// @notice Arms one reentrant call of `target` with `payload` for the next hook. Owner only.
    function arm(address target, bytes calldata payload) external {
        require(msg.sender == _owner, NotOwner(msg.sender));
        _target = target;
        _payload = payload;
        _armed = true;
    }

    /// @inheritdoc ITokenReceiver
    function onTokenTransfer(address, uint256) external {
        if (!_armed) return;
        _armed = false;
        (bool ok, bytes memory ret) = _target.call(_payload);
        _reentered = true;
        _reentrySucceeded = ok;
        _reentryError = ok ? bytes("") : ret;
    }

    /// @notice Whether the hook fired, whether the reentrant call succeeded, and its revert data.
    function outcome() external view returns (bool reentered, bool succeeded, bytes memory error) {
        return (_reentered, _reentrySucceeded, _reentryError);
    }
}
