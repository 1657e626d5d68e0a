// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice A contract buyer/merchant that refuses ETH when `refusing` is set, and can act as a buyer by
///         forwarding arbitrary calls (pay, approve) from its own address.
contract RevertingReceiver {
    bool public refusing = true;

    error Refused();

    function setRefusing(bool value) external {
        refusing = value;
    }

    /// @notice Forward a call from this contract (so it is msg.sender), with value.
    function execute(address target, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    receive() external payable {
        if (refusing) revert Refused();
    }
}
