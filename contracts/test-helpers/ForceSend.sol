// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice Test helper: forces ETH into an address that has no receive function, the way `selfdestruct`
///         always could (EIP-6780 keeps the transfer, only the deletion is restricted). Deployed with value
///         and the target; the constructor self-destructs, so nothing of it remains.
contract ForceSend {
    constructor(address payable target) payable {
        selfdestruct(target);
    }
}
