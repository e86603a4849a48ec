// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title HearthStake
/// @notice Devnet staking token: 18 decimals, owner mints.
contract HearthStake is ERC20, ERC20Permit, Ownable {
    constructor(address owner_) ERC20("Hearth Stake", "HST") ERC20Permit("Hearth Stake") Ownable(owner_) {}

    /// @notice Mints devnet tokens. Owner only.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
