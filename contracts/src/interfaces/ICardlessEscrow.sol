// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title ICardlessEscrow
/// @notice Escrow for direct top-up orders: a buyer pays against a quote signed by the gateway, an oracle
///         proves the top-up happened (EIP-712 fulfilment proof) and the payment is released to the merchant.
///         Failed orders are refunded by the oracle; orders left unfulfilled past their deadline can be
///         reclaimed by anyone, always to the buyer.
/// @dev The full order never sits in storage: only a 31-byte digest of it and its status. Every call that
///      acts on an order takes the order in calldata and checks it against the stored digest.
///      Protocol version 2 (EIP-712 domain `CardlessEscrow`, version "2"): settlement and refunds need
///      `oracleThreshold` distinct authorised oracle signatures (k-of-n); adding signers, changing the fee
///      recipient, raising the fee cap and changing the threshold wait `ADMIN_DELAY` after an announcement;
///      revoking a signer, lowering the fee cap and pausing are immediate; a balance above everything owed can
///      be skimmed to the fee recipient.
///      Constructor: `(address initialOwner, address initialFeeRecipient, uint16 initialFeeCapBps,
///      uint48 adminDelay, address[] oracleSigners, address[] quoteSigners, uint8 oracleThreshold)`;
///      `adminDelay` 0 is accepted only on dev chains (chain id 31337 or 1337).
interface ICardlessEscrow {
    /// @notice One order, exactly as the gateway quoted and signed it.
    /// @param orderId Unique id chosen by the gateway (also the provider's idempotency key).
    /// @param buyer Wallet that pays and receives any refund.
    /// @param merchant Account credited on settlement; withdrawals go to its payout address.
    /// @param token ERC-20 paid with, or address(0) for native ETH.
    /// @param amount Price in the token's base units, fee included.
    /// @param feeBps Platform fee in basis points of `amount`, at most the fee cap at payment time.
    /// @param quoteExpiry Last timestamp at which the quote may be paid.
    /// @param fulfilmentDeadline Last timestamp at which a top-up may have happened. Proofs are accepted until
    ///        `fulfilmentDeadline + SETTLEMENT_GRACE`; after that, anyone may reclaim.
    /// @param skuHash keccak256 of the SKU identifier.
    /// @param accountCommitment keccak256(game account, salt); the account itself never goes on chain.
    struct Order {
        bytes32 orderId;
        address buyer;
        address merchant;
        address token;
        uint256 amount;
        uint16 feeBps;
        uint48 quoteExpiry;
        uint48 fulfilmentDeadline;
        bytes32 skuHash;
        bytes32 accountCommitment;
    }

    /// @notice What settlement needs of an order: the fields that decide who is paid what, and a hash of the
    ///         rest. The escrow stores the first 31 bytes of keccak256(abi.encode(ref)) per order, so settling
    ///         costs 7 calldata words per order instead of 10.
    /// @param detailsHash keccak256(abi.encode(buyer, quoteExpiry, skuHash, accountCommitment)).
    struct OrderRef {
        bytes32 orderId;
        address merchant;
        address token;
        uint256 amount;
        uint16 feeBps;
        uint48 fulfilmentDeadline;
        bytes32 detailsHash;
    }

    /// @notice The oracle's statement about one order's top-up.
    /// @param receiptHash keccak256 of the RFC 8785 canonical JSON of the provider receipt.
    /// @param fulfilledAt When the provider credited the account (unix seconds).
    struct Fulfilment {
        bytes32 receiptHash;
        uint48 fulfilledAt;
    }

    /// @notice Life cycle of an order. `None` means the id was never paid.
    enum OrderStatus {
        None,
        Paid,
        Settled,
        Refunded,
        Reclaimed
    }

    /// @notice Owner changes that take effect only `ADMIN_DELAY` after they were scheduled. `value` encodes:
    ///         an address as `bytes32(uint256(uint160(a)))` (AddOracleSigner, AddQuoteSigner, SetFeeRecipient),
    ///         a number as `bytes32(uint256(n))` (RaiseFeeCap: basis points; SetOracleThreshold: k).
    enum AdminAction {
        AddOracleSigner,
        AddQuoteSigner,
        SetFeeRecipient,
        RaiseFeeCap,
        SetOracleThreshold
    }

    /// @notice Why `settleBatch` skipped an entry (`None` is never emitted).
    enum SkipReason {
        None,
        NotPaid,
        OrderMismatch,
        FulfilledAfterDeadline,
        SettlementWindowClosed
    }

    // ------------------------------------------------------------------ events

    /// @notice A buyer paid an order into escrow. Carries the whole order so watchers need no other source.
    event OrderPaid(
        bytes32 indexed orderId,
        address indexed buyer,
        address indexed merchant,
        address token,
        uint256 amount,
        uint16 feeBps,
        uint48 quoteExpiry,
        uint48 fulfilmentDeadline,
        bytes32 skuHash,
        bytes32 accountCommitment,
        address quoteSigner
    );

    /// @notice An order was settled on a fulfilment proof; the merchant and fee balances were credited.
    /// @dev Amounts are derivable from the `OrderPaid` event; the signer is in `FulfilmentsAttested`.
    event OrderSettled(bytes32 indexed orderId, bytes32 receiptHash, uint48 fulfilledAt);

    /// @notice Oracle signers' proof settled `orders` orders (a batch counts only the orders it settled, not
    ///         those it skipped). `signers` are the distinct authorised signers whose signatures over `digest`
    ///         were checked, ascending. Emitted after the call's `OrderSettled` events.
    event FulfilmentsAttested(bytes32 indexed digest, address[] signers, uint256 orders);

    /// @notice `settleBatch` left an entry unsettled and credited nothing for it: the order was no longer
    ///         `Paid`, its calldata did not match the paid order (or it was never paid), its proof says the
    ///         top-up happened after the deadline, or its settlement window had closed.
    event SettlementSkipped(bytes32 indexed orderId, SkipReason reason);

    /// @notice The oracle refunded a failed order to the buyer, on the signatures of `signers` (ascending).
    event OrderRefunded(bytes32 indexed orderId, uint16 reasonCode, address[] signers);

    /// @notice Someone reclaimed an order not settled within its settlement window; the buyer was repaid.
    event OrderReclaimed(bytes32 indexed orderId, address caller);

    /// @notice A refund could not be pushed to the buyer and was credited to their balance instead.
    event RefundDeferred(bytes32 indexed orderId, address indexed buyer, address token, uint256 amount);

    /// @notice An account's balance was paid out.
    event Withdrawn(address indexed account, address indexed token, address to, uint256 amount);

    /// @notice Accrued platform fees were paid out.
    event FeesWithdrawn(address indexed token, address to, uint256 amount);

    /// @notice A merchant chose where its withdrawals are paid.
    event PayoutAddressSet(address indexed account, address payout);

    /// @notice The owner granted or revoked an oracle (fulfilment proof) signer.
    event OracleSignerSet(address indexed signer, bool authorised);

    /// @notice The owner granted or revoked a quote signer.
    event QuoteSignerSet(address indexed signer, bool authorised);

    /// @notice The owner granted or revoked a sweeper (an account that may trigger anyone's withdrawal).
    event SweeperSet(address indexed sweeper, bool authorised);

    /// @notice The owner allowed or disallowed a payment token (address(0) is native ETH).
    event TokenAllowedSet(address indexed token, bool allowed);

    /// @notice The owner changed the maximum fee an order may carry.
    event FeeCapSet(uint16 feeCapBps);

    /// @notice The owner changed where platform fees are paid.
    event FeeRecipientSet(address indexed feeRecipient);

    /// @notice The number of distinct oracle signatures settlement and refunds need changed.
    event OracleThresholdSet(uint8 threshold);

    /// @notice The owner announced a change that anyone may execute from `eta` on (unless cancelled first).
    ///         `id` = keccak256(abi.encode(action, value, eta)).
    event AdminChangeScheduled(bytes32 indexed id, AdminAction indexed action, bytes32 value, uint48 eta);

    /// @notice The owner withdrew an announced change before it was executed.
    event AdminChangeCancelled(bytes32 indexed id);

    /// @notice An announced change took effect; its own event (`OracleSignerSet`, `QuoteSignerSet`,
    ///         `FeeRecipientSet`, `FeeCapSet` or `OracleThresholdSet`) follows in the same transaction.
    event AdminChangeExecuted(bytes32 indexed id);

    /// @notice `amount` of `token` held above everything owed was paid to the fee recipient `to`.
    event SurplusSkimmed(address indexed token, address to, uint256 amount);

    // ------------------------------------------------------------------ errors

    /// @notice `orderId` was already used.
    error OrderAlreadyExists(bytes32 orderId);
    /// @notice The quote may no longer be paid.
    error QuoteExpired(bytes32 orderId, uint48 quoteExpiry, uint256 timestamp);
    /// @notice The fulfilment deadline is not in the future.
    error DeadlineInPast(bytes32 orderId, uint48 fulfilmentDeadline, uint256 timestamp);
    /// @notice The order carries a higher fee than the cap allows.
    error FeeAboveCap(bytes32 orderId, uint16 feeBps, uint16 feeCapBps);
    /// @notice Orders must be for a positive amount.
    error ZeroAmount(bytes32 orderId);
    /// @notice The amount exceeds `MAX_AMOUNT`, the bound that keeps fee arithmetic from overflowing.
    error AmountTooLarge(bytes32 orderId, uint256 amount, uint256 maxAmount);
    /// @notice A merchant or buyer that is 0x0, the escrow or an allow-listed token.
    error InvalidParty(bytes32 orderId, address account);
    /// @notice Only the account, its payout address or a sweeper may trigger a withdrawal.
    error UnauthorisedWithdrawal(address account, address caller);
    /// @notice The escrow itself or an allow-listed token cannot be a payout address.
    error InvalidPayoutAddress(address payout);
    /// @notice Renouncing ownership is disabled.
    error RenounceDisabled();
    /// @notice Only the order's buyer may pay it.
    error BuyerMismatch(bytes32 orderId, address buyer, address caller);
    /// @notice The token is not on the allow-list.
    error TokenNotAllowed(address token);
    /// @notice Native payment with the wrong `msg.value`, or ETH sent with an ERC-20 payment.
    error IncorrectNativeAmount(bytes32 orderId, uint256 expected, uint256 received);
    /// @notice The escrow's token balance grew by less than the amount (fee-on-transfer or rebasing token).
    error TokenTransferShortfall(address token, uint256 expected, uint256 received);
    /// @notice `signer` is not an authorised quote signer.
    error UnauthorisedQuoteSigner(address signer);
    /// @notice `signer` is not an authorised oracle signer.
    error UnauthorisedOracleSigner(address signer);
    /// @notice Oracle signers must be listed strictly ascending (which also makes them distinct).
    error SignersNotAscending(address previous, address signer);
    /// @notice Fewer oracle signatures than `oracleThreshold`, or not one signature per signer.
    error NotEnoughSignatures(uint256 signers, uint256 signatures, uint8 threshold);
    /// @notice The announced change is unknown (never scheduled, cancelled or already executed).
    error AdminChangeUnknown(bytes32 id);
    /// @notice The same change with the same eta is already pending.
    error AdminChangeAlreadyScheduled(bytes32 id);
    /// @notice The change's delay has not passed yet.
    error AdminChangeNotReady(bytes32 id, uint48 eta, uint256 timestamp);
    /// @notice The change was not executed within `ADMIN_GRACE` after its eta; it is void (schedule it again).
    error AdminChangeExpired(bytes32 id, uint48 eta, uint256 timestamp);
    /// @notice The scheduled value does not fit the action (address out of range, zero, no raise, bad threshold).
    error InvalidAdminValue(AdminAction action, bytes32 value);
    /// @notice An admin delay of 0 outside a dev chain (31337, 1337).
    error AdminDelayRequired(uint256 chainId);
    /// @notice The threshold must be between 1 and the number of authorised oracle signers.
    error InvalidThreshold(uint8 threshold, uint256 signers);
    /// @notice A fee cap may be lowered immediately, only raised through the delay.
    error FeeCapNotLower(uint16 feeCapBps, uint16 current);
    /// @notice The escrow holds nothing of `token` above what it owes.
    error NoSurplus(address token);
    /// @notice Only refunded or reclaimed orders can be reconciled.
    error OrderNotClosed(bytes32 orderId, OrderStatus status);
    /// @notice The signature does not verify for `signer` over `digest`.
    error InvalidSignature(address signer, bytes32 digest);
    /// @notice The order in calldata does not match the stored digest (or was never paid).
    error OrderMismatch(bytes32 orderId);
    /// @notice The order is not in the `Paid` state.
    error OrderNotPaid(bytes32 orderId, OrderStatus status);
    /// @notice The proof says the top-up happened after the fulfilment deadline.
    error FulfilledAfterDeadline(bytes32 orderId, uint48 fulfilledAt, uint48 fulfilmentDeadline);
    /// @notice The settlement window (`fulfilmentDeadline + SETTLEMENT_GRACE`) has not closed yet: the order
    ///         cannot be reclaimed before `closesAt` has passed.
    error SettlementWindowOpen(bytes32 orderId, uint256 closesAt, uint256 timestamp);
    /// @notice The settlement window closed at `closesAt`: no proof is accepted any more; the order can only
    ///         be refunded or reclaimed.
    error SettlementWindowClosed(bytes32 orderId, uint256 closesAt, uint256 timestamp);
    /// @notice A batch must contain at least one order and one fulfilment per order.
    error BatchLengthMismatch(uint256 orders, uint256 fulfilments);
    /// @notice Nothing to pay out: the balance is at most the one base unit a payout leaves.
    error NothingToWithdraw(address account, address token);
    /// @notice A fee cap above 100% was requested.
    error FeeCapTooHigh(uint16 feeCapBps, uint16 maxBps);
    /// @notice A permit payment was attempted for a native-ETH order.
    error PermitRequiresToken(bytes32 orderId);
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();

    // ------------------------------------------------------------------ buyer

    /// @notice Pay `order` into escrow. For ERC-20 the buyer must have approved `order.amount`; for native
    ///         ETH `msg.value` must equal `order.amount` exactly.
    /// @param order The order as quoted.
    /// @param quoteSigner The gateway key (EOA or EIP-1271 contract) that signed the quote.
    /// @param quoteSignature EIP-712 signature of `order` by `quoteSigner`.
    function pay(Order calldata order, address quoteSigner, bytes calldata quoteSignature) external payable;

    /// @notice Pay an ERC-20 order in one transaction using an EIP-2612 permit signed by the buyer.
    /// @dev If the permit was already used (for example front-run), the payment proceeds when the allowance
    ///      is sufficient anyway.
    function payWithPermit(
        Order calldata order,
        address quoteSigner,
        bytes calldata quoteSignature,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Reclaim an order nobody settled within its settlement window (after
    ///         `fulfilmentDeadline + SETTLEMENT_GRACE`). Anyone may call; the buyer is paid.
    function reclaim(Order calldata order) external;

    // ------------------------------------------------------------------ oracle

    /// @notice Settle one order on a fulfilment proof. Anyone holding a valid proof may call, until
    ///         `fulfilmentDeadline + SETTLEMENT_GRACE`; the proof's `fulfilledAt` must be at most the deadline.
    /// @param order The settlement fields of the order as paid (see `OrderRef`).
    /// @param fulfilment The oracle's receipt hash and fulfilment time.
    /// @param signers At least `oracleThreshold` authorised oracle keys (EOA or EIP-1271 contract), strictly
    ///        ascending.
    /// @param signatures One EIP-712 signature of `Fulfilment(orderId, receiptHash, fulfilledAt)` per signer,
    ///        in the same order.
    function settle(
        OrderRef calldata order,
        Fulfilment calldata fulfilment,
        address[] calldata signers,
        bytes[] calldata signatures
    ) external;

    /// @notice Settle many orders on one signature over `FulfilmentBatch(Fulfilment[] fulfilments)`.
    /// @dev An entry that cannot be settled is skipped with `SettlementSkipped(orderId, reason)` instead of
    ///      reverting the batch: an order no longer `Paid` (settled, refunded or reclaimed), calldata that does
    ///      not match the stored digest (or an order never paid), `fulfilledAt` after the deadline, or a closed
    ///      settlement window. One bad entry never delays the others. Only bad signatures (or too few) and
    ///      mismatched array lengths revert the batch. Signers as in `settle`, all over the batch digest.
    function settleBatch(
        OrderRef[] calldata orders,
        Fulfilment[] calldata fulfilments,
        address[] calldata signers,
        bytes[] calldata signatures
    ) external;

    /// @notice Refund a failed order to its buyer on `oracleThreshold` oracle signatures over
    ///         `Refund(orderId, reasonCode)` (signers strictly ascending, one signature each).
    function refund(Order calldata order, uint16 reasonCode, address[] calldata signers, bytes[] calldata signatures)
        external;

    // ------------------------------------------------------------------ payouts

    /// @notice Pay `account`'s balance of `token`, but one base unit kept so the slot never returns to zero (the
    ///         next settlement would pay 17,100 gas more), to its payout address. Only the account, its payout
    ///         address or an authorised sweeper (the oracle's sweep job) may call: a stranger, or the holder of
    ///         a leaked payout wallet, cannot race the account's `setPayoutAddress`.
    function withdraw(address account, address token) external;

    /// @notice Pay the accrued platform fees in `token`, but one base unit, to the fee recipient. Anyone may call.
    function withdrawFees(address token) external;

    /// @notice Choose where the caller's withdrawals are paid (address(0) resets to the caller itself).
    function setPayoutAddress(address payout) external;

    /// @notice Pay whatever the escrow holds of `token` above everything it owes (open escrow, account
    ///         balances and fee balances, dust included) to the fee recipient: ETH forced in by `selfdestruct`
    ///         or a coinbase reward, tokens sent directly. Anyone may call. Refunded and reclaimed orders stay
    ///         in `owed` until `reconcile`d, so before that the skim pays less, never more.
    function skimSurplus(address token) external;

    /// @notice Drop refunded or reclaimed orders from `owed` (anyone may call; whoever skims calls it first).
    ///         Refund and reclaim leave `owed` alone so they pay no extra storage write (5,000 gas each);
    ///         each order is reconciled once (its stored digest is cleared, its status stays).
    function reconcile(Order[] calldata closed) external;

    // ------------------------------------------------------------------ owner

    /// @notice Announce a change (see `AdminAction`) that anyone may execute from `eta` = now + `ADMIN_DELAY`.
    function scheduleAdminChange(AdminAction action, bytes32 value) external returns (bytes32 id, uint48 eta);

    /// @notice Withdraw an announced change before it is executed.
    function cancelAdminChange(bytes32 id) external;

    /// @notice Apply an announced change at or after its `eta`. Anyone may call.
    function executeAdminChange(AdminAction action, bytes32 value, uint48 eta) external;

    /// @notice Revoke an oracle signer, immediately (adding one goes through `scheduleAdminChange`). Revoking
    ///         below the threshold stops settlement and refunds until a signer is added; buyers can reclaim.
    function revokeOracleSigner(address signer) external;

    /// @notice Revoke a quote signer, immediately.
    function revokeQuoteSigner(address signer) external;

    /// @notice Grant or revoke a sweeper: an account that may trigger any account's withdrawal (always paid to
    ///         that account's payout address).
    function setSweeper(address sweeper, bool authorised) external;

    /// @notice Allow or disallow a payment token for new payments (address(0) is native ETH).
    function setTokenAllowed(address token, bool allowed) external;

    /// @notice Lower the highest fee (basis points) a new order may carry, immediately.
    function lowerFeeCap(uint16 feeCapBps) external;

    /// @notice Stop new payments. Settlement, refunds, reclaims and withdrawals keep working.
    function pause() external;

    /// @notice Resume new payments.
    function unpause() external;

    // ------------------------------------------------------------------ views

    /// @notice Status of an order.
    function orderStatus(bytes32 orderId) external view returns (OrderStatus);

    /// @notice EIP-712 struct hash of an order (what the quote signer signs, wrapped in the domain).
    function hashOrder(Order calldata order) external pure returns (bytes32);

    /// @notice The 31-byte digest the escrow stores for `order` (that of its `OrderRef`).
    function orderDigest(Order calldata order) external pure returns (bytes31);

    /// @notice EIP-712 digest a quote signer signs for `order`.
    function quoteDigest(Order calldata order) external view returns (bytes32);

    /// @notice EIP-712 digest an oracle signer signs for one fulfilment.
    function fulfilmentDigest(bytes32 orderId, Fulfilment calldata fulfilment) external view returns (bytes32);

    /// @notice EIP-712 digest an oracle signer signs for a refund.
    function refundDigest(bytes32 orderId, uint16 reasonCode) external view returns (bytes32);

    /// @notice Balance of `token` held for `account` (merchant settlements and deferred refunds).
    function balanceOf(address account, address token) external view returns (uint256);

    /// @notice Where `account`'s withdrawals are paid.
    function payoutAddressOf(address account) external view returns (address);

    /// @notice Everything the escrow owes in `token`: open escrow + account balances + fee balance, plus
    ///         refunded and reclaimed orders not yet `reconcile`d (an overstatement only).
    function owed(address token) external view returns (uint256);

    /// @notice The escrow's holding of `token` above `owed(token)` (what `skimSurplus` would pay).
    function surplus(address token) external view returns (uint256);

    /// @notice Whether `signer` is an authorised oracle signer.
    function isOracleSigner(address signer) external view returns (bool);

    /// @notice Distinct oracle signatures settlement and refunds need.
    function oracleThreshold() external view returns (uint8);

    /// @notice Number of authorised oracle signers.
    function oracleSignerCount() external view returns (uint256);

    /// @notice Delay between announcing and executing an admin change, fixed at deployment.
    function ADMIN_DELAY() external view returns (uint48);

    /// @notice Whether the change `id` is announced and neither cancelled nor executed.
    function isAdminChangePending(bytes32 id) external view returns (bool);
}
