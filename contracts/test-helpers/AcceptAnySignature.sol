// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";

/// @notice A careless EIP-1271 implementation that accepts every signature: the kind of delegate an EOA may
///         once have authorised with EIP-7702 (even a chain-id-0 authorisation signed elsewhere).
contract AcceptAnySignature is IERC1271 {
    function isValidSignature(bytes32, bytes calldata) external pure returns (bytes4) {
        return IERC1271.isValidSignature.selector;
    }
}
