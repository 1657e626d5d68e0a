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
/// @dev Accounting invariant, per token: this contract's balance >= owed(token) == sum of `Paid` order amounts
///      + sum of account balances + fee balance. Every transition below keeps it; only value nobody accounted
///      for (forced-in ETH, tokens sent directly) makes it strict, and `skimSurplus` pays exactly that part.
contract CardlessEscrow is ICardlessEscrow, EIP712, Ownable2Step, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev Per token, one slot: whether new payments may use it, and everything the escrow owes in it (open
    ///      escrow + account balances + fee balance). `pay` reads the flag anyway, so counting the payment costs
    ///      a warm write (2,900 gas) instead of a cold slot of its own (+2,100).
    struct TokenState {
        bool allowed;
        uint248 owed;
    }

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

    /// @notice How long after its eta an announced admin change may still be executed. A change nobody executed
    ///         within two weeks is void: watchers that saw it announced need not watch it forever.
    uint48 public constant ADMIN_GRACE = 14 days;

    /// @notice Delay between announcing an admin change and its earliest execution (0 only on dev chains).
    uint48 public immutable ADMIN_DELAY;

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
    /// @notice Distinct oracle signatures settlement and refunds need.
    uint8 public oracleThreshold;

    mapping(bytes32 orderId => OrderRecord record) internal _orders;
    mapping(address account => mapping(address token => uint256 amount)) internal _balances;
    mapping(address account => address payout) internal _payouts;

    /// @notice Platform fees accrued per token and not yet withdrawn.
    mapping(address token => uint256 amount) public feeBalance;
    /// @dev Per oracle signer: 0 when not authorised, else a copy of `oracleThreshold`. Settlement reads the
    ///      signer's slot anyway, so the threshold costs no cold read of its own (2,100 gas); changing the
    ///      threshold rewrites every signer's copy (`_oracleSignerList`, a handful of keys).
    mapping(address signer => uint256 threshold) internal _oracleSigners;
    address[] internal _oracleSignerList;
    /// @notice Keys whose quotes are accepted.
    mapping(address signer => bool authorised) public isQuoteSigner;
    /// @dev Allow-list flag and owed amount per token; address(0) is native ETH.
    mapping(address token => TokenState state) internal _tokens;
    /// @notice Announced admin changes not yet executed or cancelled, by id.
    mapping(bytes32 id => bool pending) public isAdminChangePending;
    /// @notice Accounts (the oracle's sweep job) that may trigger any account's withdrawal to its payout address.
    mapping(address sweeper => bool authorised) public isSweeper;

    // ------------------------------------------------------------------ constructor

    /// @param initialOwner Owner (a multisig in production).
    /// @param initialFeeRecipient Where platform fees are paid.
    /// @param initialFeeCapBps Highest fee an order may carry.
    /// @param adminDelay `ADMIN_DELAY`; 0 only on a dev chain (chain id 31337 or 1337).
    /// @param initialOracleSigners Initial oracle signers (deployment is not a change: no delay).
    /// @param initialQuoteSigners Initial quote signers.
    /// @param initialOracleThreshold Distinct oracle signatures needed: 1..max(1, initialOracleSigners.length).
    constructor(
        address initialOwner,
        address initialFeeRecipient,
        uint16 initialFeeCapBps,
        uint48 adminDelay,
        address[] memory initialOracleSigners,
        address[] memory initialQuoteSigners,
        uint8 initialOracleThreshold
    ) EIP712("CardlessEscrow", "2") Ownable(initialOwner) {
        if (adminDelay == 0 && block.chainid != 31337 && block.chainid != 1337) {
            revert AdminDelayRequired(block.chainid);
        }
        ADMIN_DELAY = adminDelay;
        _setFeeRecipient(initialFeeRecipient);
        _setFeeCap(initialFeeCapBps);
        uint256 count = initialOracleSigners.length;
        if (initialOracleThreshold == 0 || initialOracleThreshold > (count == 0 ? 1 : count)) {
            revert InvalidThreshold(initialOracleThreshold, count);
        }
        oracleThreshold = initialOracleThreshold;
        emit OracleThresholdSet(initialOracleThreshold);
        for (uint256 i; i < count; ++i) {
            _addOracleSigner(initialOracleSigners[i]);
        }
        for (uint256 i; i < initialQuoteSigners.length; ++i) {
            _setQuoteSigner(initialQuoteSigners[i], true);
        }
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
        address[] calldata signers,
        bytes[] calldata signatures
    ) external nonReentrant {
        // checks
        _requirePaid(order.orderId, _refDigest(order));
        if (fulfilment.fulfilledAt > order.fulfilmentDeadline) {
            revert FulfilledAfterDeadline(order.orderId, fulfilment.fulfilledAt, order.fulfilmentDeadline);
        }
        uint256 closesAt = _windowEnd(order.fulfilmentDeadline);
        if (block.timestamp > closesAt) revert SettlementWindowClosed(order.orderId, closesAt, block.timestamp);
        bytes32 digest = _hashTypedDataV4(_hashFulfilment(order.orderId, fulfilment));
        _requireOracleSignatures(digest, signers, signatures);
        // effects (no interactions: settlement only credits balances)
        _orders[order.orderId].status = OrderStatus.Settled;
        uint256 fee = _fee(order.amount, order.feeBps);
        _balances[order.merchant][order.token] += order.amount - fee;
        feeBalance[order.token] += fee;
        emit OrderSettled(order.orderId, fulfilment.receiptHash, fulfilment.fulfilledAt);
        emit FulfilmentsAttested(digest, signers, 1);
    }

    /// @inheritdoc ICardlessEscrow
    function settleBatch(
        OrderRef[] calldata orders,
        Fulfilment[] calldata fulfilments,
        address[] calldata signers,
        bytes[] calldata signatures
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
        _requireOracleSignatures(digest, signers, signatures);

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
            bytes31 stored = record.digest;
            if (stored != _refDigest(order)) {
                // a reconciled order (refunded or reclaimed, digest cleared) has ended; it is not a mismatch
                bool reconciled = stored == bytes31(0) && record.status > OrderStatus.Paid;
                skip = reconciled ? SkipReason.NotPaid : SkipReason.OrderMismatch;
            } else if (record.status != OrderStatus.Paid) {
                skip = SkipReason.NotPaid;
            } else if (fulfilment.fulfilledAt > deadline) {
                skip = SkipReason.FulfilledAfterDeadline;
            } else if (deadline < oldestOpen) {
                skip = SkipReason.SettlementWindowClosed;
            }
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
        emit FulfilmentsAttested(digest, signers, settled);
    }

    /// @inheritdoc ICardlessEscrow
    function refund(Order calldata order, uint16 reasonCode, address[] calldata signers, bytes[] calldata signatures)
        external
        nonReentrant
    {
        // checks
        _requirePaid(order.orderId, _orderDigest(order));
        _requireOracleSignatures(
            _hashTypedDataV4(keccak256(abi.encode(_REFUND_TYPEHASH, order.orderId, reasonCode))), signers, signatures
        );
        // effects
        _orders[order.orderId].status = OrderStatus.Refunded;
        emit OrderRefunded(order.orderId, reasonCode, signers);
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
        _tokens[token].owed -= uint248(amount); // amount <= balance <= owed
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
        _tokens[token].owed -= uint248(amount); // amount <= fee balance <= owed
        emit FeesWithdrawn(token, to, amount);
        _send(token, to, amount);
    }

    /// @inheritdoc ICardlessEscrow
    function reconcile(Order[] calldata closed) external nonReentrant {
        for (uint256 i; i < closed.length; ++i) {
            Order calldata order = closed[i];
            OrderRecord storage record = _orders[order.orderId];
            OrderStatus status = record.status;
            if (status != OrderStatus.Refunded && status != OrderStatus.Reclaimed) revert OrderNotClosed(order.orderId, status);
            // A reconciled order keeps its status and loses its digest, so it cannot be counted twice.
            if (record.digest != _orderDigest(order)) revert OrderMismatch(order.orderId);
            record.digest = bytes31(0);
            // Paid out to the buyer, or credited to its balance (counted again when deferred, see _repayBuyer).
            _tokens[order.token].owed -= uint248(order.amount);
        }
    }

    /// @inheritdoc ICardlessEscrow
    function skimSurplus(address token) external nonReentrant {
        uint256 amount = surplus(token);
        if (amount == 0) revert NoSurplus(token);
        address to = feeRecipient;
        emit SurplusSkimmed(token, to, amount);
        _send(token, to, amount);
    }

    /// @inheritdoc ICardlessEscrow
    function setPayoutAddress(address payout) external {
        // Paying out to the escrow itself would strand the funds (credited to nobody, held forever), and to a
        // token contract lose them. address(0) resets the payout to the caller itself.
        if (payout == address(this) || (payout != address(0) && _tokens[payout].allowed)) {
            revert InvalidPayoutAddress(payout);
        }
        _payouts[msg.sender] = payout;
        emit PayoutAddressSet(msg.sender, payout == address(0) ? msg.sender : payout);
    }

    // ------------------------------------------------------------------ owner

    /// @inheritdoc ICardlessEscrow
    function scheduleAdminChange(AdminAction action, bytes32 value)
        external
        onlyOwner
        returns (bytes32 id, uint48 eta)
    {
        _checkAdminValue(action, value);
        eta = uint48(block.timestamp) + ADMIN_DELAY;
        id = _adminChangeId(action, value, eta);
        if (isAdminChangePending[id]) revert AdminChangeAlreadyScheduled(id);
        isAdminChangePending[id] = true;
        emit AdminChangeScheduled(id, action, value, eta);
    }

    /// @inheritdoc ICardlessEscrow
    function cancelAdminChange(bytes32 id) external onlyOwner {
        if (!isAdminChangePending[id]) revert AdminChangeUnknown(id);
        delete isAdminChangePending[id];
        emit AdminChangeCancelled(id);
    }

    /// @inheritdoc ICardlessEscrow
    function executeAdminChange(AdminAction action, bytes32 value, uint48 eta) external {
        bytes32 id = _adminChangeId(action, value, eta);
        if (!isAdminChangePending[id]) revert AdminChangeUnknown(id);
        if (block.timestamp < eta) revert AdminChangeNotReady(id, eta, block.timestamp);
        if (block.timestamp > uint256(eta) + ADMIN_GRACE) revert AdminChangeExpired(id, eta, block.timestamp);
        delete isAdminChangePending[id];
        emit AdminChangeExecuted(id);
        if (action == AdminAction.AddOracleSigner) {
            _addOracleSigner(address(uint160(uint256(value))));
        } else if (action == AdminAction.AddQuoteSigner) {
            _setQuoteSigner(address(uint160(uint256(value))), true);
        } else if (action == AdminAction.SetFeeRecipient) {
            _setFeeRecipient(address(uint160(uint256(value))));
        } else if (action == AdminAction.RaiseFeeCap) {
            _setFeeCap(uint16(uint256(value)));
        } else {
            _setOracleThreshold(uint8(uint256(value)));
        }
    }

    /// @inheritdoc ICardlessEscrow
    function revokeOracleSigner(address signer) external onlyOwner {
        if (_oracleSigners[signer] != 0) {
            delete _oracleSigners[signer];
            uint256 n = _oracleSignerList.length;
            for (uint256 i; i < n; ++i) {
                if (_oracleSignerList[i] == signer) {
                    _oracleSignerList[i] = _oracleSignerList[n - 1];
                    _oracleSignerList.pop();
                    break;
                }
            }
        }
        emit OracleSignerSet(signer, false);
    }

    /// @inheritdoc ICardlessEscrow
    function revokeQuoteSigner(address signer) external onlyOwner {
        _setQuoteSigner(signer, false);
    }

    /// @inheritdoc ICardlessEscrow
    function setSweeper(address sweeper, bool authorised) external onlyOwner {
        if (sweeper == address(0)) revert ZeroAddress();
        isSweeper[sweeper] = authorised;
        emit SweeperSet(sweeper, authorised);
    }

    /// @inheritdoc ICardlessEscrow
    function setTokenAllowed(address token, bool allowed) external onlyOwner {
        _tokens[token].allowed = allowed;
        emit TokenAllowedSet(token, allowed);
    }

    /// @inheritdoc ICardlessEscrow
    function lowerFeeCap(uint16 newFeeCapBps) external onlyOwner {
        if (newFeeCapBps >= feeCapBps) revert FeeCapNotLower(newFeeCapBps, feeCapBps);
        _setFeeCap(newFeeCapBps);
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

    /// @notice Whether `token` is accepted for new payments (address(0) is native ETH).
    function isTokenAllowed(address token) external view returns (bool) {
        return _tokens[token].allowed;
    }

    /// @inheritdoc ICardlessEscrow
    function owed(address token) external view returns (uint256) {
        return _tokens[token].owed;
    }

    /// @inheritdoc ICardlessEscrow
    function surplus(address token) public view returns (uint256) {
        uint256 held = token == address(0) ? address(this).balance : IERC20(token).balanceOf(address(this));
        uint256 due = _tokens[token].owed;
        return held > due ? held - due : 0;
    }

    /// @inheritdoc ICardlessEscrow
    function isOracleSigner(address signer) external view returns (bool) {
        return _oracleSigners[signer] != 0;
    }

    /// @inheritdoc ICardlessEscrow
    function oracleSignerCount() external view returns (uint256) {
        return _oracleSignerList.length;
    }

    /// @notice The authorised oracle signers, in no particular order.
    function oracleSigners() external view returns (address[] memory) {
        return _oracleSignerList;
    }

    // ------------------------------------------------------------------ internal

    /// @dev All checks and effects of a payment; the caller moves the funds afterwards.
    function _acceptOrder(Order calldata order, address quoteSigner, bytes calldata quoteSignature) internal {
        bytes32 orderId = order.orderId;
        // checks
        if (msg.sender != order.buyer) revert BuyerMismatch(orderId, order.buyer, msg.sender);
        TokenState storage tokenState = _tokens[order.token];
        if (!tokenState.allowed) revert TokenNotAllowed(order.token);
        // The buyer is msg.sender: never 0x0 or this contract, and an allow-listed token contract paying for
        // itself chose its own refund address, so only the merchant, named by the quote alone, is checked
        // (the buyer's allow-list read cost a cold slot, 2,100 gas, in every payment).
        _requireParty(orderId, order.merchant);
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
        tokenState.owed += uint248(order.amount); // checked: reverts for a token whose supply passes 2^248
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
        if (account == address(0) || account == address(this) || _tokens[account].allowed) {
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
        bytes31 stored = record.digest;
        if (stored != digest) {
            // a reconciled order (digest cleared) has ended: say so rather than "mismatch"
            if (stored == bytes31(0) && status != OrderStatus.Paid) revert OrderNotPaid(orderId, status);
            revert OrderMismatch(orderId);
        }
        if (status != OrderStatus.Paid) revert OrderNotPaid(orderId, status);
    }

    /// @dev k-of-n: at least `oracleThreshold` signers, strictly ascending (so distinct), each authorised, each
    ///      with a valid signature over `digest`. The threshold is read from the signers' own slots (see
    ///      `_oracleSigners`), so threshold 1 costs what a single-signer check cost in v1.
    function _requireOracleSignatures(bytes32 digest, address[] calldata signers, bytes[] calldata signatures)
        internal
        view
    {
        uint256 n = signers.length;
        if (n == 0 || n != signatures.length) revert NotEnoughSignatures(n, signatures.length, oracleThreshold);
        address previous;
        for (uint256 i; i < n; ++i) {
            address signer = signers[i];
            if (signer <= previous) revert SignersNotAscending(previous, signer);
            uint256 threshold = _oracleSigners[signer];
            if (threshold == 0) revert UnauthorisedOracleSigner(signer);
            if (n < threshold) revert NotEnoughSignatures(n, n, uint8(threshold));
            _requireSignature(signer, digest, signatures[i]);
            previous = signer;
        }
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
        // A pushed refund leaves `owed` alone (a cold slot: 5,000 gas in every refund and reclaim): the amount
        // stays counted until `reconcile` drops it, so `owed` can only overstate and a skim never takes what
        // is due. A deferred one counts the new balance too (the rare path), so that `reconcile` subtracting
        // the order's amount is right either way.
        if (!paid) {
            _balances[order.buyer][order.token] += order.amount;
            _tokens[order.token].owed += uint248(order.amount);
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

    function _setQuoteSigner(address signer, bool authorised) internal {
        if (signer == address(0)) revert ZeroAddress();
        isQuoteSigner[signer] = authorised;
        emit QuoteSignerSet(signer, authorised);
    }

    function _addOracleSigner(address signer) internal {
        if (signer == address(0)) revert ZeroAddress();
        if (_oracleSigners[signer] == 0) {
            _oracleSigners[signer] = oracleThreshold;
            _oracleSignerList.push(signer);
        }
        emit OracleSignerSet(signer, true);
    }

    function _setOracleThreshold(uint8 threshold) internal {
        uint256 n = _oracleSignerList.length;
        if (threshold == 0 || threshold > n) revert InvalidThreshold(threshold, n);
        oracleThreshold = threshold;
        for (uint256 i; i < n; ++i) {
            _oracleSigners[_oracleSignerList[i]] = threshold;
        }
        emit OracleThresholdSet(threshold);
    }

    /// @dev Rejects at scheduling what could never execute: an address that is 0 or does not fit 160 bits, a
    ///      fee cap that is not a raise or above 100%, a threshold of 0.
    function _checkAdminValue(AdminAction action, bytes32 value) internal view {
        uint256 v = uint256(value);
        bool ok;
        if (action == AdminAction.RaiseFeeCap) ok = v > feeCapBps && v <= MAX_BPS;
        else if (action == AdminAction.SetOracleThreshold) ok = v != 0 && v <= type(uint8).max;
        else ok = v != 0 && v <= type(uint160).max;
        if (!ok) revert InvalidAdminValue(action, value);
    }

    function _adminChangeId(AdminAction action, bytes32 value, uint48 eta) internal pure returns (bytes32) {
        return keccak256(abi.encode(action, value, eta));
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

    /// @dev EIP-712 `hashStruct(order)`: the typehash and the order's ten static words, hashed from calldata in
    ///      unallocated memory. Only `pay` relies on it, after `_acceptOrder` read every field through Solidity
    ///      (so ABI-validated); a dirty word elsewhere only changes the hash.
    function _hashOrder(Order calldata order) internal pure returns (bytes32 h) {
        bytes32 typehash = _ORDER_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typehash)
            calldatacopy(add(ptr, 0x20), order, 0x140)
            h := keccak256(ptr, 0x160)
        }
    }

    /// @dev The stored digest of a full order: that of its `OrderRef` (see `_refDigest`), with
    ///      detailsHash = keccak256(abi.encode(buyer, quoteExpiry, skuHash, accountCommitment)), both hashed from
    ///      calldata in unallocated memory. `pay` stores it only after reading every field through Solidity
    ///      (ABI-validated); in refund and reclaim a dirty word only changes the digest, so it cannot match.
    function _orderDigest(Order calldata order) internal pure returns (bytes31 digest) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, calldataload(add(order, 0x20))) // buyer
            mstore(add(ptr, 0x20), calldataload(add(order, 0xc0))) // quoteExpiry
            calldatacopy(add(ptr, 0x40), add(order, 0x100), 0x40) // skuHash, accountCommitment
            let details := keccak256(ptr, 0x80)
            mstore(ptr, calldataload(order)) // orderId
            calldatacopy(add(ptr, 0x20), add(order, 0x40), 0x80) // merchant, token, amount, feeBps
            mstore(add(ptr, 0xa0), calldataload(add(order, 0xe0))) // fulfilmentDeadline
            mstore(add(ptr, 0xc0), details)
            digest := and(keccak256(ptr, 0xe0), not(0xff))
        }
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
