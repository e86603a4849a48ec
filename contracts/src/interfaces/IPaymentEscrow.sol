// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Hearth payment escrow (batched settlement, money side)
/// @notice Payers deposit the payment token and allocate it to per-provider lanes. A provider is
/// paid from its lane by redeeming payer-signed cumulative vouchers (`ReceiptAggregateVoucher`,
/// EIP-712): a voucher pays the difference between its cumulative value and what was already
/// collected on the lane, so no voucher pays twice and a lower voucher after a higher one pays
/// nothing. When the lane is short, the lane is emptied and the rest stays collectable with the
/// same voucher later (a short lane never burns a voucher).
///
/// Money leaves a lane back to the payer only through a thaw: `thaw` announces an amount, and
/// `withdrawThawed` pays it out after `thawDelay()`, which is always longer than the batch
/// settlement horizon (challenge window + leaf reveal + dispute) plus a governance margin. During
/// the delay the provider keeps collecting from the whole lane, thawing part included, and the
/// withdrawal takes only what is left: a provider is never paid from money that already left,
/// and a payer never takes back money a valid voucher had claimed.
///
/// Payers authorize signers (a gateway's key, a key per API key) with a proof of possession (the
/// signer's EIP-712 `SignerAuthorization` naming the payer and an expiry). A signer's vouchers
/// are valid until its expiry and until it is revoked; revoking needs a thaw of `thawDelay()`
/// first, so providers holding its vouchers have the delay to collect them.
///
/// Providers post a payment-token bond; batch fraud (see `IBatchSettlement`) refunds the
/// fraudulent leaf's value plus a penalty from it into the payer's unallocated deposit. The bond
/// leaves through a thaw too, and not before every batch of the provider stopped being
/// challengeable.
///
/// Invariant: this contract's payment-token balance == sum of unallocated deposits + sum of
/// lane balances + sum of provider bonds.
///
/// Accepted risks: the payer's unallocated deposit is withdrawable at once (no provider can be
/// paid from it, only from lanes). A proof of possession can be replayed by the payer it names
/// to re-authorize the same signer after revoking it (the signer consented to that payer once);
/// a signer key that must never sign again for a payer must be retired, not just revoked. The
/// voucher's timestamp is informational; validity is decided at collection time.
interface IPaymentEscrow {
    /// @notice A per-request payment receipt, signed by the payer or its signer and aggregated
    /// off-chain into vouchers. Not redeemed on-chain; the type lives here so its EIP-712 domain
    /// is the escrow's.
    struct PaymentReceipt {
        address payer;
        address provider;
        bytes32 requestId;
        uint128 value;
        uint64 timestamp;
    }

    /// @notice A cumulative voucher over every receipt of `payer` to `provider` so far.
    struct ReceiptAggregateVoucher {
        address payer;
        address provider;
        uint128 cumulativeValue;
        uint64 timestamp;
    }

    /// @notice What a signer signs to prove it holds its key and consents to sign for `payer`.
    struct SignerAuthorization {
        address payer;
        uint64 expiry;
    }

    /// @notice A payer's lane to one provider.
    /// @param balance what the provider can still be paid (thawing part included)
    /// @param collected everything paid to the provider on this lane so far
    /// @param thawing what the payer announced it takes back
    /// @param thawEnd when `thawing` becomes withdrawable (0 when nothing thaws)
    struct Lane {
        uint128 balance;
        uint128 collected;
        uint128 thawing;
        uint40 thawEnd;
    }

    /// @notice A payer's authorized signer. `expiry` 0 means not authorized.
    struct Signer {
        uint64 expiry;
        uint40 thawEnd;
        bool canAllocate;
    }

    struct Bond {
        uint128 amount;
        uint128 thawing;
        uint40 thawEnd;
    }

    error ZeroAmount();
    error LengthMismatch();
    error InsufficientDeposit(address payer, uint256 requested, uint256 available);
    error NotAllocator(address payer, address caller);
    error InsufficientLane(address payer, address provider, uint256 requested, uint256 available);
    error NothingThawing(address payer, address provider);
    error ThawNotReady(uint256 readyAt);
    error ExpiryInPast(uint256 expiry);
    error InvalidSignerProof(address payer, address signer);
    error UnknownSigner(address payer, address signer);
    error InvalidVoucherSignature(address payer, address provider);
    error NotVoucherProvider(address caller, address provider);
    error VoucherNotNewer(address payer, address provider, uint256 cumulativeValue, uint256 collected);
    error NothingCollected();
    error BondLocked(address provider, uint256 until);
    error OnlySettlement(address caller);
    error SettlementAlreadySet();
    error TokenTransferShortfall(uint256 expected, uint256 received);
    error InvalidParameter();

    event Deposited(address indexed payer, uint256 amount, uint256 deposit);
    event DepositWithdrawn(address indexed payer, uint256 amount, uint256 deposit);
    /// @param by the payer or the signer that allocated for it
    event Allocated(address indexed payer, address indexed provider, uint256 amount, uint256 laneBalance, address by);
    event ThawStarted(address indexed payer, address indexed provider, uint256 amount, uint256 thawEnd);
    event ThawCancelled(address indexed payer, address indexed provider);
    event ThawWithdrawn(address indexed payer, address indexed provider, uint256 amount, uint256 laneBalance);
    event SignerAuthorized(address indexed payer, address indexed signer, uint64 expiry, bool canAllocate);
    event SignerThawStarted(address indexed payer, address indexed signer, uint256 thawEnd);
    event SignerThawCancelled(address indexed payer, address indexed signer);
    event SignerRevoked(address indexed payer, address indexed signer);
    /// @param amount paid now; `cumulativeValue - collected` stays collectable
    event Collected(
        address indexed payer,
        address indexed provider,
        uint256 amount,
        uint256 collected,
        uint256 cumulativeValue,
        uint256 laneBalance
    );
    event BondDeposited(address indexed provider, uint256 amount, uint256 bond);
    event BondThawStarted(address indexed provider, uint256 amount, uint256 thawEnd);
    event BondWithdrawn(address indexed provider, uint256 amount, uint256 bond);
    /// @notice Fraud refund: `amount` moved from the provider's bond into the payer's deposit.
    event BondSeized(address indexed provider, address indexed payer, uint256 amount, uint256 bond);
    event ParametersSet(uint256 minThawDelay, uint256 thawMargin);
    event SettlementSet(address settlement);

    /// @notice Deposits `amount` of the payment token for the caller (needs an allowance).
    function deposit(uint256 amount) external;
    /// @notice Deposits for the caller and allocates it to lanes in one call.
    function depositAndAllocate(address[] calldata providers, uint256[] calldata amounts) external;
    /// @notice Withdraws from the caller's unallocated deposit (no delay: no provider can be
    /// paid from it).
    function withdrawDeposit(uint256 amount) external;
    /// @notice Moves `amounts` of `payer`'s unallocated deposit into its lanes to `providers`.
    /// The caller is the payer or a valid signer it authorized to allocate.
    function allocate(address payer, address[] calldata providers, uint256[] calldata amounts) external;
    /// @notice Announces taking `amount` back from the caller's lane to `provider`; restarts the
    /// delay. Replaces an earlier thaw of that lane.
    function thaw(address provider, uint256 amount) external;
    /// @notice Cancels the caller's thaw of its lane to `provider` (only the payer can).
    function cancelThaw(address provider) external;
    /// @notice After the delay, pays the caller what is left of the thawed amount.
    function withdrawThawed(address provider) external returns (uint256 amount);

    /// @notice Authorizes `signer` to sign vouchers (and, with `canAllocate`, to allocate) for
    /// the caller until `expiry`. `proof` is the signer's EIP-712 `SignerAuthorization(caller,
    /// expiry)`. Re-authorizing updates expiry and flag and cancels a thaw.
    function authorizeSigner(address signer, uint64 expiry, bool canAllocate, bytes calldata proof) external;
    /// @notice Starts the delay after which `signer` can be revoked.
    function thawSigner(address signer) external;
    function cancelSignerThaw(address signer) external;
    /// @notice Revokes a signer whose thaw has ended; its vouchers are refused from now on.
    function revokeSigner(address signer) external;

    /// @notice Redeems vouchers for the caller, who must be every voucher's provider; pays the
    /// sum in one transfer. Reverts if nothing at all is paid.
    function collect(ReceiptAggregateVoucher[] calldata vouchers, bytes[] calldata signatures)
        external
        returns (uint256 paid);

    function depositBond(uint256 amount) external;
    function thawBond(uint256 amount) external;
    /// @notice Withdraws the thawed bond after the delay and once no batch of the caller is
    /// challengeable any more.
    function withdrawBond() external returns (uint256 amount);
    /// @notice Moves up to `amount` of `provider`'s bond into `payer`'s deposit. Settlement only.
    function seizeBond(address provider, address payer, uint256 amount) external returns (uint256 seized);

    function setParameters(uint256 minThawDelay, uint256 thawMargin) external;
    /// @notice Binds the batch settlement contract (once). Owner only.
    function setSettlement(address settlement) external;

    /// @notice max(minThawDelay, settlement horizon + margin): the delay of every thaw started now.
    function thawDelay() external view returns (uint256);
    function depositOf(address payer) external view returns (uint256);
    function getLane(address payer, address provider) external view returns (Lane memory);
    function getSigner(address payer, address signer) external view returns (Signer memory);
    /// @notice Whether `signer` may sign for `payer` now (the payer itself always may).
    function isValidSigner(address payer, address signer) external view returns (bool);
    function getBond(address provider) external view returns (Bond memory);
    function hashVoucher(ReceiptAggregateVoucher calldata voucher) external view returns (bytes32);
    function hashPaymentReceipt(PaymentReceipt calldata receipt) external view returns (bytes32);
    function minThawDelay() external view returns (uint256);
    function thawMargin() external view returns (uint256);
    function paymentToken() external view returns (address);
    function settlement() external view returns (address);
    function DOMAIN_SEPARATOR() external view returns (bytes32);
}
