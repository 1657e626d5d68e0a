// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

import {ICardlessEscrow} from "./interfaces/ICardlessEscrow.sol";

/// @title CardlessEscrow
/// @notice Holds buyers' payments for direct top-up orders until an oracle proves fulfilment.
/// @dev Accounting invariant, per token: this contract's balance == sum of `Paid` order amounts
///      + sum of account balances + fee balance. Every transition below keeps it.
contract CardlessEscrow is ICardlessEscrow, EIP712, Ownable2Step, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev Storage for one order: a 31-byte prefix of its EIP-712 struct hash and its status, one slot.
    ///      248 bits of the hash keep second-preimage resistance far beyond any practical attack.
    struct OrderRecord {
        bytes31 digest;
        OrderStatus status;
    }

    // ------------------------------------------------------------------ constants

    /// @notice Basis-point denominator.
    uint16 public constant MAX_BPS = 10_000;

    /// @notice Largest amount an order may carry: `MAX_AMOUNT * MAX_BPS` fits in a uint256, so the fee
    ///         arithmetic cannot overflow. It is ~1.2e73 base units, beyond any real token supply.
    uint256 public constant MAX_AMOUNT = type(uint256).max / MAX_BPS;

    /// @dev Gas forwarded when pushing a native refund to a buyer. Enough for smart-contract wallets that
    ///      emit an event on receipt; a receiver that needs more (or reverts) gets the refund credited to its
    ///      balance instead, withdrawable with full gas. The cap stops a buyer contract from burning the
    ///      oracle's gas on refund.
    uint256 internal constant _NATIVE_REFUND_GAS = 50_000;

    /// @notice Time after an order's `fulfilmentDeadline` during which a proof of a top-up made by the deadline
    ///         is still accepted; `reclaim` opens only when it has passed, so the last second a top-up may
    ///         happen is never the first second the buyer may take the money back (docs/protocol.md,
    ///         "Settlement window"). A constant, not an order field: every order gets the same window, an
    ///         auditor reads it from the code, and calldata and the quote stay as they are.
    uint48 public constant SETTLEMENT_GRACE = 6 hours;

    /// @dev Base units a payout leaves in a balance. Zeroing the slot made the next settlement write it from
    ///      zero (22,100 gas instead of 5,000 for the merchant and again for the fee balance: 87,058 instead of
    ///      52,858 gas), and the sweep job pays merchants every minute, so most first settlements after a sweep
    ///      paid it. The dust remains owed to the account (it is in `balanceOf` and in the accounting
    ///      invariant); it is simply never paid out.
    uint256 internal constant _DUST = 1;

    bytes32 internal constant _ORDER_TYPEHASH = keccak256(
        "Order(bytes32 orderId,address buyer,address merchant,address token,uint256 amount,uint16 feeBps,"
        "uint48 quoteExpiry,uint48 fulfilmentDeadline,bytes32 skuHash,bytes32 accountCommitment)"
    );
    bytes32 internal constant _FULFILMENT_TYPEHASH =
        keccak256("Fulfilment(bytes32 orderId,bytes32 receiptHash,uint48 fulfilledAt)");
    bytes32 internal constant _FULFILMENT_BATCH_TYPEHASH = keccak256(
        "FulfilmentBatch(Fulfilment[] fulfilments)Fulfilment(bytes32 orderId,bytes32 receiptHash,uint48 fulfilledAt)"
    );
    bytes32 internal constant _REFUND_TYPEHASH = keccak256("Refund(bytes32 orderId,uint16 reasonCode)");

    // ------------------------------------------------------------------ storage

    /// @notice Highest fee a new order may carry, in basis points.
    uint16 public feeCapBps;
    /// @notice Where platform fees are paid.
    address public feeRecipient;

    mapping(bytes32 orderId => OrderRecord record) internal _orders;
    mapping(address account => mapping(address token => uint256 amount)) internal _balances;
    mapping(address account => address payout) internal _payouts;

    /// @notice Platform fees accrued per token and not yet withdrawn.
    mapping(address token => uint256 amount) public feeBalance;
    /// @notice Keys whose fulfilment proofs and refund authorisations are accepted.
    mapping(address signer => bool authorised) public isOracleSigner;
    /// @notice Keys whose quotes are accepted.
    mapping(address signer => bool authorised) public isQuoteSigner;
    /// @notice Tokens accepted for new payments; address(0) is native ETH.
    mapping(address token => bool allowed) public isTokenAllowed;
    /// @notice Accounts (the oracle's sweep job) that may trigger any account's withdrawal to its payout address.
    mapping(address sweeper => bool authorised) public isSweeper;

    // ------------------------------------------------------------------ constructor

    /// @param initialOwner Owner (a multisig in production).
    /// @param initialFeeRecipient Where platform fees are paid.
    /// @param initialFeeCapBps Highest fee an order may carry.
    constructor(address initialOwner, address initialFeeRecipient, uint16 initialFeeCapBps)
        EIP712("CardlessEscrow", "1")
        Ownable(initialOwner)
    {
        _setFeeRecipient(initialFeeRecipient);
        _setFeeCap(initialFeeCapBps);
    }

    // ------------------------------------------------------------------ buyer

    /// @inheritdoc ICardlessEscrow
    function pay(Order calldata order, address quoteSigner, bytes calldata quoteSignature)
        external
        payable
        nonReentrant
        whenNotPaused
    {
        _acceptOrder(order, quoteSigner, quoteSignature);
        if (order.token == address(0)) {
            if (msg.value != order.amount) revert IncorrectNativeAmount(order.orderId, order.amount, msg.value);
        } else {
            if (msg.value != 0) revert IncorrectNativeAmount(order.orderId, 0, msg.value);
            _pullExact(IERC20(order.token), order.amount);
        }
    }

    /// @inheritdoc ICardlessEscrow
    function payWithPermit(
        Order calldata order,
        address quoteSigner,
        bytes calldata quoteSignature,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant whenNotPaused {
        if (order.token == address(0)) revert PermitRequiresToken(order.orderId);
        _acceptOrder(order, quoteSigner, quoteSignature);
        // A permit can be front-run (anyone may submit it first); then the allowance already exists and the
        // pull below succeeds, so a failed permit is only fatal when the allowance is missing.
        try IERC20Permit(order.token).permit(order.buyer, address(this), order.amount, permitDeadline, v, r, s) {}
            catch {}
        _pullExact(IERC20(order.token), order.amount);
    }

    /// @inheritdoc ICardlessEscrow
    function reclaim(Order calldata order) external nonReentrant {
        // checks
        _requirePaid(order.orderId, _orderDigest(order));
        uint256 closesAt = _windowEnd(order.fulfilmentDeadline);
        if (block.timestamp <= closesAt) revert SettlementWindowOpen(order.orderId, closesAt, block.timestamp);
        // effects
        _orders[order.orderId].status = OrderStatus.Reclaimed;
        emit OrderReclaimed(order.orderId, msg.sender);
        // interactions
        _repayBuyer(order);
    }

    // ------------------------------------------------------------------ oracle

    /// @inheritdoc ICardlessEscrow
    function settle(
        OrderRef calldata order,
        Fulfilment calldata fulfilment,
        address oracleSigner,
        bytes calldata signature
    ) external nonReentrant {
        // checks
        _requirePaid(order.orderId, _refDigest(order));
        if (fulfilment.fulfilledAt > order.fulfilmentDeadline) {
            revert FulfilledAfterDeadline(order.orderId, fulfilment.fulfilledAt, order.fulfilmentDeadline);
        }
        uint256 closesAt = _windowEnd(order.fulfilmentDeadline);
        if (block.timestamp > closesAt) revert SettlementWindowClosed(order.orderId, closesAt, block.timestamp);
        bytes32 digest = _hashTypedDataV4(_hashFulfilment(order.orderId, fulfilment));
        _requireOracleSignature(oracleSigner, digest, signature);
        // effects (no interactions: settlement only credits balances)
        _orders[order.orderId].status = OrderStatus.Settled;
        uint256 fee = _fee(order.amount, order.feeBps);
        _balances[order.merchant][order.token] += order.amount - fee;
        feeBalance[order.token] += fee;
        emit OrderSettled(order.orderId, fulfilment.receiptHash, fulfilment.fulfilledAt);
        emit FulfilmentsAttested(digest, oracleSigner, 1);
    }

    /// @inheritdoc ICardlessEscrow
    function settleBatch(
        OrderRef[] calldata orders,
        Fulfilment[] calldata fulfilments,
        address oracleSigner,
        bytes calldata signature
    ) external nonReentrant {
        uint256 n = orders.length;
        if (n == 0 || n != fulfilments.length) revert BatchLengthMismatch(n, fulfilments.length);

        // checks: one signature over EIP-712 `FulfilmentBatch(Fulfilment[] fulfilments)`
        bytes32[] memory leaves = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            leaves[i] = _hashFulfilment(orders[i].orderId, fulfilments[i]);
        }
        bytes32 leavesHash;
        // EIP-712 encodes an array of structs as keccak256 of the concatenated struct hashes: hash the array's
        // body in place instead of copying it with abi.encodePacked.
        assembly ("memory-safe") {
            leavesHash := keccak256(add(leaves, 0x20), mul(n, 0x20))
        }
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(_FULFILMENT_BATCH_TYPEHASH, leavesHash)));
        _requireOracleSignature(oracleSigner, digest, signature);

        // effects: credits are summed while consecutive orders share merchant and token, so a batch of one
        // merchant's orders writes its balance once instead of once per order.
        address merchant = orders[0].merchant;
        address token = orders[0].token;
        uint256 merchantSum;
        uint256 feeSum;
        uint256 settled;
        // An order's window is closed when deadline + SETTLEMENT_GRACE < block.timestamp, that is when its
        // deadline is below `oldestOpen`: one comparison per order instead of an addition and a comparison.
        uint256 oldestOpen = block.timestamp > SETTLEMENT_GRACE ? block.timestamp - SETTLEMENT_GRACE : 0;
        for (uint256 i; i < n; ++i) {
            OrderRef calldata order = orders[i];
            OrderRecord storage record = _orders[order.orderId];
            Fulfilment calldata fulfilment = fulfilments[i];
            uint48 deadline = order.fulfilmentDeadline;
            // Skip with an event, never revert: one entry that cannot be settled (ended by a racing reclaim or
            // refund, mismatching, late) must not block the others. Nothing is credited for a skipped entry.
            SkipReason skip;
            if (record.digest != _refDigest(order)) skip = SkipReason.OrderMismatch;
            else if (record.status != OrderStatus.Paid) skip = SkipReason.NotPaid;
            else if (fulfilment.fulfilledAt > deadline) skip = SkipReason.FulfilledAfterDeadline;
            else if (deadline < oldestOpen) skip = SkipReason.SettlementWindowClosed;
            else skip = SkipReason.None;
            if (skip != SkipReason.None) {
                emit SettlementSkipped(order.orderId, skip);
                continue;
            }
            record.status = OrderStatus.Settled;
            emit OrderSettled(order.orderId, fulfilment.receiptHash, fulfilment.fulfilledAt);
            unchecked {
                ++settled; // bounded by n
            }

            address orderMerchant = order.merchant;
            address orderToken = order.token;
            if (orderMerchant != merchant || orderToken != token) {
                _credit(merchant, token, merchantSum, feeSum);
                (merchant, token, merchantSum, feeSum) = (orderMerchant, orderToken, 0, 0);
            }
            uint256 amount = order.amount;
            uint256 fee = _fee(amount, order.feeBps);
            unchecked {
                // fee <= amount (feeBps <= MAX_BPS). Sums are bounded by this contract's token balance.
                merchantSum += amount - fee;
                feeSum += fee;
            }
        }
        _credit(merchant, token, merchantSum, feeSum);
        emit FulfilmentsAttested(digest, oracleSigner, settled);
    }

    /// @inheritdoc ICardlessEscrow
    function refund(Order calldata order, uint16 reasonCode, address oracleSigner, bytes calldata signature)
        external
        nonReentrant
    {
        // checks
        _requirePaid(order.orderId, _orderDigest(order));
        _requireOracleSignature(
            oracleSigner,
            _hashTypedDataV4(keccak256(abi.encode(_REFUND_TYPEHASH, order.orderId, reasonCode))),
            signature
        );
        // effects
        _orders[order.orderId].status = OrderStatus.Refunded;
        emit OrderRefunded(order.orderId, reasonCode, oracleSigner);
        // interactions
        _repayBuyer(order);
    }

    // ------------------------------------------------------------------ payouts

    /// @inheritdoc ICardlessEscrow
    function withdraw(address account, address token) external nonReentrant {
        // checks: the account, its payout address or a sweeper; anyone else could race a payout change
        address to = payoutAddressOf(account);
        if (msg.sender != account && msg.sender != to && !isSweeper[msg.sender]) {
            revert UnauthorisedWithdrawal(account, msg.sender);
        }
        uint256 balance = _balances[account][token];
        if (balance <= _DUST) revert NothingToWithdraw(account, token);
        // effects: the dust stays (see _DUST)
        uint256 amount;
        unchecked {
            amount = balance - _DUST; // balance > _DUST
        }
        _balances[account][token] = _DUST;
        emit Withdrawn(account, token, to, amount);
        // interactions: a payout address that reverts fails only its own withdrawal.
        _send(token, to, amount);
    }

    /// @inheritdoc ICardlessEscrow
    function withdrawFees(address token) external nonReentrant {
        uint256 balance = feeBalance[token];
        if (balance <= _DUST) revert NothingToWithdraw(address(this), token);
        address to = feeRecipient;
        uint256 amount;
        unchecked {
            amount = balance - _DUST; // balance > _DUST
        }
        feeBalance[token] = _DUST;
        emit FeesWithdrawn(token, to, amount);
        _send(token, to, amount);
    }

    /// @inheritdoc ICardlessEscrow
    function setPayoutAddress(address payout) external {
        // Paying out to the escrow itself would strand the funds (credited to nobody, held forever), and to a
        // token contract lose them. address(0) resets the payout to the caller itself.
        if (payout == address(this) || (payout != address(0) && isTokenAllowed[payout])) {
            revert InvalidPayoutAddress(payout);
        }
        _payouts[msg.sender] = payout;
        emit PayoutAddressSet(msg.sender, payout == address(0) ? msg.sender : payout);
    }

    // ------------------------------------------------------------------ owner

    /// @inheritdoc ICardlessEscrow
    function setOracleSigner(address signer, bool authorised) external onlyOwner {
        if (signer == address(0)) revert ZeroAddress();
        isOracleSigner[signer] = authorised;
        emit OracleSignerSet(signer, authorised);
    }

    /// @inheritdoc ICardlessEscrow
    function setQuoteSigner(address signer, bool authorised) external onlyOwner {
        if (signer == address(0)) revert ZeroAddress();
        isQuoteSigner[signer] = authorised;
        emit QuoteSignerSet(signer, authorised);
    }

    /// @inheritdoc ICardlessEscrow
    function setSweeper(address sweeper, bool authorised) external onlyOwner {
        if (sweeper == address(0)) revert ZeroAddress();
        isSweeper[sweeper] = authorised;
        emit SweeperSet(sweeper, authorised);
    }

    /// @inheritdoc ICardlessEscrow
    function setTokenAllowed(address token, bool allowed) external onlyOwner {
        isTokenAllowed[token] = allowed;
        emit TokenAllowedSet(token, allowed);
    }

    /// @inheritdoc ICardlessEscrow
    function setFeeCap(uint16 newFeeCapBps) external onlyOwner {
        _setFeeCap(newFeeCapBps);
    }

    /// @inheritdoc ICardlessEscrow
    function setFeeRecipient(address newFeeRecipient) external onlyOwner {
        _setFeeRecipient(newFeeRecipient);
    }

    /// @notice Disabled: an escrow without an owner could never be unpaused or get new signers.
    /// @dev Ownership moves only by the two-step transfer to a new owner.
    function renounceOwnership() public view override onlyOwner {
        revert RenounceDisabled();
    }

    /// @inheritdoc ICardlessEscrow
    function pause() external onlyOwner {
        _pause();
    }

    /// @inheritdoc ICardlessEscrow
    function unpause() external onlyOwner {
        _unpause();
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc ICardlessEscrow
    function orderStatus(bytes32 orderId) external view returns (OrderStatus) {
        return _orders[orderId].status;
    }

    /// @inheritdoc ICardlessEscrow
    function hashOrder(Order calldata order) external pure returns (bytes32) {
        return _hashOrder(order);
    }

    /// @inheritdoc ICardlessEscrow
    function orderDigest(Order calldata order) external pure returns (bytes31) {
        return _orderDigest(order);
    }

    /// @inheritdoc ICardlessEscrow
    function quoteDigest(Order calldata order) external view returns (bytes32) {
        return _hashTypedDataV4(_hashOrder(order));
    }

    /// @inheritdoc ICardlessEscrow
    function fulfilmentDigest(bytes32 orderId, Fulfilment calldata fulfilment) external view returns (bytes32) {
        return _hashTypedDataV4(_hashFulfilment(orderId, fulfilment));
    }

    /// @inheritdoc ICardlessEscrow
    function refundDigest(bytes32 orderId, uint16 reasonCode) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(_REFUND_TYPEHASH, orderId, reasonCode)));
    }

    /// @inheritdoc ICardlessEscrow
    function balanceOf(address account, address token) external view returns (uint256) {
        return _balances[account][token];
    }

    /// @inheritdoc ICardlessEscrow
    function payoutAddressOf(address account) public view returns (address) {
        address payout = _payouts[account];
        return payout == address(0) ? account : payout;
    }

    // ------------------------------------------------------------------ internal

    /// @dev All checks and effects of a payment; the caller moves the funds afterwards.
    function _acceptOrder(Order calldata order, address quoteSigner, bytes calldata quoteSignature) internal {
        bytes32 orderId = order.orderId;
        // checks
        if (msg.sender != order.buyer) revert BuyerMismatch(orderId, order.buyer, msg.sender);
        if (!isTokenAllowed[order.token]) revert TokenNotAllowed(order.token);
        // The buyer is msg.sender (never 0x0 or this contract); the merchant is only named in the quote.
        _requireParty(orderId, order.merchant);
        if (isTokenAllowed[order.buyer]) revert InvalidParty(orderId, order.buyer);
        if (order.amount == 0) revert ZeroAmount(orderId);
        // Bounds amount * feeBps in _fee, so settlement can never overflow for an order that was accepted.
        if (order.amount > MAX_AMOUNT) revert AmountTooLarge(orderId, order.amount, MAX_AMOUNT);
        if (order.feeBps > feeCapBps) revert FeeAboveCap(orderId, order.feeBps, feeCapBps);
        if (block.timestamp > order.quoteExpiry) revert QuoteExpired(orderId, order.quoteExpiry, block.timestamp);
        if (block.timestamp >= order.fulfilmentDeadline) {
            revert DeadlineInPast(orderId, order.fulfilmentDeadline, block.timestamp);
        }
        OrderRecord storage record = _orders[orderId];
        if (record.status != OrderStatus.None) revert OrderAlreadyExists(orderId);
        if (!isQuoteSigner[quoteSigner]) revert UnauthorisedQuoteSigner(quoteSigner);
        bytes32 structHash = _hashOrder(order);
        _requireSignature(quoteSigner, _hashTypedDataV4(structHash), quoteSignature);
        // effects
        (record.digest, record.status) = (_orderDigest(order), OrderStatus.Paid);
        emit OrderPaid(
            orderId,
            order.buyer,
            order.merchant,
            order.token,
            order.amount,
            order.feeBps,
            order.quoteExpiry,
            order.fulfilmentDeadline,
            order.skuHash,
            order.accountCommitment,
            quoteSigner
        );
    }

    /// @dev An account that may hold a balance or receive a payout: not 0x0 (anyone could then burn its
    ///      credit), not this contract (credited to nobody), not an allow-listed token (tokens sent to a token
    ///      contract are lost).
    function _requireParty(bytes32 orderId, address account) internal view {
        if (account == address(0) || account == address(this) || isTokenAllowed[account]) {
            revert InvalidParty(orderId, account);
        }
    }

    /// @dev Pulls `amount` from the caller (`_acceptOrder` checked it is the order's buyer) and insists the
    ///      balance grew by exactly that much, which refuses fee-on-transfer and other tokens that would leave
    ///      the escrow short. Pulling from msg.sender, never from an argument, means nobody can spend another
    ///      account's allowance.
    function _pullExact(IERC20 token, uint256 amount) internal {
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert TokenTransferShortfall(address(token), amount, received);
    }

    /// @dev Reverts unless the order's stored digest equals `digest` and the order is `Paid`.
    function _requirePaid(bytes32 orderId, bytes31 digest) internal view {
        OrderRecord storage record = _orders[orderId];
        OrderStatus status = record.status;
        if (status == OrderStatus.None) revert OrderNotPaid(orderId, status);
        if (record.digest != digest) revert OrderMismatch(orderId);
        if (status != OrderStatus.Paid) revert OrderNotPaid(orderId, status);
    }

    function _requireOracleSignature(address signer, bytes32 digest, bytes calldata signature) internal view {
        if (!isOracleSigner[signer]) revert UnauthorisedOracleSigner(signer);
        _requireSignature(signer, digest, signature);
    }

    /// @dev ECDSA for keys, EIP-1271 only for contracts that are not EIP-7702-delegated EOAs. ECDSA is tried
    ///      first: recovering a contract's address would need a key nobody has, so a match proves a key signed,
    ///      and the common EOA case pays no cold account access for the signer's code. When it fails, EIP-1271
    ///      is asked only if the signer has code that is not a delegation designator (0xef0100 || address):
    ///      an EOA has no code, and a delegated EOA's delegate (possibly one its key authorised long ago, even
    ///      with a chain-id-0 authorisation) must not speak for the key — in v1 an empty signature settled.
    function _requireSignature(address signer, bytes32 digest, bytes calldata signature) internal view {
        // The third value only details a failed recovery; any failure falls through below.
        // slither-disable-next-line unused-return
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err == ECDSA.RecoverError.NoError && recovered == signer) return;
        if (!_isPlainContract(signer) || !SignatureChecker.isValidERC1271SignatureNowCalldata(signer, digest, signature))
        {
            revert InvalidSignature(signer, digest);
        }
    }

    /// @dev True when `account` has code and that code is not an EIP-7702 delegation designator.
    function _isPlainContract(address account) internal view returns (bool) {
        uint256 size = account.code.length;
        if (size == 0) return false;
        if (size != 23) return true; // a designator is exactly 0xef0100 followed by a 20-byte address
        bytes3 prefix;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            extcodecopy(account, ptr, 0, 3)
            prefix := mload(ptr)
        }
        return prefix != 0xef0100;
    }

    /// @dev Refund and reclaim pay the buyer. A buyer that cannot receive (reverting contract, blacklisted
    ///      address, paused token) gets the amount credited to its balance instead, so the order still ends
    ///      and nobody else is blocked.
    function _repayBuyer(Order calldata order) internal {
        bool paid;
        if (order.token == address(0)) {
            address buyer = order.buyer;
            uint256 amount = order.amount;
            uint256 gasLimit = _NATIVE_REFUND_GAS;
            // Plain call with capped gas and no return data copied: a hostile receiver can neither burn the
            // caller's gas nor return-bomb it.
            assembly ("memory-safe") {
                paid := call(gasLimit, buyer, amount, 0, 0, 0, 0)
            }
        } else {
            paid = IERC20(order.token).trySafeTransfer(order.buyer, order.amount);
        }
        if (!paid) {
            _balances[order.buyer][order.token] += order.amount;
            emit RefundDeferred(order.orderId, order.buyer, order.token, order.amount);
        }
    }

    function _send(address token, address to, uint256 amount) internal {
        if (token == address(0)) Address.sendValue(payable(to), amount);
        else IERC20(token).safeTransfer(to, amount);
    }

    function _credit(address merchant, address token, uint256 merchantAmount, uint256 feeAmount) internal {
        if (merchantAmount != 0) _balances[merchant][token] += merchantAmount;
        if (feeAmount != 0) feeBalance[token] += feeAmount;
    }

    function _setFeeCap(uint16 newFeeCapBps) internal {
        if (newFeeCapBps > MAX_BPS) revert FeeCapTooHigh(newFeeCapBps, MAX_BPS);
        feeCapBps = newFeeCapBps;
        emit FeeCapSet(newFeeCapBps);
    }

    function _setFeeRecipient(address newFeeRecipient) internal {
        if (newFeeRecipient == address(0)) revert ZeroAddress();
        feeRecipient = newFeeRecipient;
        emit FeeRecipientSet(newFeeRecipient);
    }

    /// @dev Last second at which a proof for an order with this deadline is accepted. uint48 + 6 hours
    ///      cannot overflow uint256.
    function _windowEnd(uint48 fulfilmentDeadline) internal pure returns (uint256) {
        return uint256(fulfilmentDeadline) + SETTLEMENT_GRACE;
    }

    /// @dev Fee rounds down, so the merchant gets the remainder and no wei is lost. Payment enforced
    ///      amount <= MAX_AMOUNT and feeBps <= MAX_BPS, so the product cannot overflow and fee <= amount.
    function _fee(uint256 amount, uint16 feeBps) internal pure returns (uint256) {
        return amount * feeBps / MAX_BPS;
    }

    /// @dev EIP-712 `hashStruct(order)`. Order is a static struct, so abi.encode lays it out field by field:
    ///      exactly EIP-712 encodeData.
    function _hashOrder(Order calldata order) internal pure returns (bytes32) {
        return keccak256(abi.encode(_ORDER_TYPEHASH, order));
    }

    /// @dev The stored digest of a full order: that of its `OrderRef` (see `_refDigest`).
    function _orderDigest(Order calldata order) internal pure returns (bytes31) {
        bytes32 details = keccak256(abi.encode(order.buyer, order.quoteExpiry, order.skuHash, order.accountCommitment));
        return bytes31(
            keccak256(
                abi.encode(
                    order.orderId, order.merchant, order.token, order.amount, order.feeBps, order.fulfilmentDeadline, details
                )
            )
        );
    }

    /// @dev keccak256 of the seven words of an `OrderRef`, hashed from calldata in unallocated memory (settleBatch
    ///      calls this per order). A dirty word only changes the hash, so it cannot match a stored digest.
    function _refDigest(OrderRef calldata ref) internal pure returns (bytes31 digest) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, ref, 0xe0)
            digest := and(keccak256(ptr, 0xe0), not(0xff))
        }
    }

    /// @dev EIP-712 `hashStruct(Fulfilment(orderId, receiptHash, fulfilledAt))` in unallocated memory (settleBatch
    ///      calls this per order). The fields are read through Solidity first, so they are ABI-validated.
    function _hashFulfilment(bytes32 orderId, Fulfilment calldata fulfilment) internal pure returns (bytes32 h) {
        bytes32 typehash = _FULFILMENT_TYPEHASH;
        bytes32 receipt = fulfilment.receiptHash;
        uint48 fulfilledAt = fulfilment.fulfilledAt;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typehash)
            mstore(add(ptr, 0x20), orderId)
            mstore(add(ptr, 0x40), receipt)
            mstore(add(ptr, 0x60), fulfilledAt)
            h := keccak256(ptr, 0x80)
        }
    }
}
