// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ITokenReceiver} from "./ITokenReceiver.sol";

/// @title CallbackToken
/// @notice Test only. An ERC-20 that calls `onTokenTransfer` on every recipient that opted in,
/// after the balances moved: the reentrancy vector of ERC-777-style tokens. A market paying out
/// in this token hands the recipient control while its own call is still on the stack.
contract CallbackToken is ERC20 {
    mapping(address account => bool) private _hooked;

    constructor() ERC20("Callback Token", "CBT") {}

    /// @notice Anyone mints: a test token.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Opts the caller in or out of the transfer hook.
    function setHook(bool on) external {
        _hooked[msg.sender] = on;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (_hooked[to]) ITokenReceiver(to).onTokenTransfer(from, value);
    }
}
