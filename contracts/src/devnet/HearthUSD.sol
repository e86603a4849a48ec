// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title HearthUSD
/// @notice Devnet stablecoin-like payment token: 6 decimals, EIP-2612 permit, owner mints.
contract HearthUSD is ERC20, ERC20Permit, Ownable {
    constructor(address owner_) ERC20("Hearth USD", "hUSD") ERC20Permit("Hearth USD") Ownable(owner_) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints devnet tokens. Owner only.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
