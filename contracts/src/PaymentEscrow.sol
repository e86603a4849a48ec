// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IPaymentEscrow} from "./interfaces/IPaymentEscrow.sol";
import {IBatchSettlement} from "./interfaces/IBatchSettlement.sol";

/// @title PaymentEscrow
/// @dev A lane's `balance` and `collected` share one slot, which is all `collect` writes; the
/// thaw lives in the lane's second slot and is capped at the balance when it is withdrawn, so a
/// collection never has to touch it.
contract PaymentEscrow is IPaymentEscrow, Ownable2Step, ReentrancyGuardTransient, EIP712 {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    bytes32 public constant PAYMENT_RECEIPT_TYPEHASH =
        keccak256("PaymentReceipt(address payer,address provider,bytes32 requestId,uint128 value,uint64 timestamp)");
    bytes32 public constant VOUCHER_TYPEHASH = keccak256(
        "ReceiptAggregateVoucher(address payer,address provider,uint128 cumulativeValue,uint64 timestamp)"
    );
    bytes32 public constant SIGNER_AUTHORIZATION_TYPEHASH =
        keccak256("SignerAuthorization(address payer,uint64 expiry)");

    IERC20 private immutable _token;

    address private _settlement;
    uint40 private _minThawDelay;
    uint40 private _thawMargin;
    mapping(address payer => uint256) private _deposits;
    mapping(address payer => mapping(address provider => Lane)) private _lanes;
    mapping(address payer => mapping(address signer => Signer)) private _signers;
    mapping(address provider => Bond) private _bonds;

    constructor(address owner_, IERC20 token_, uint256 minThawDelay_, uint256 thawMargin_)
        Ownable(owner_)
        EIP712("Hearth PaymentEscrow", "1")
    {
        _token = token_;
        _setParameters(minThawDelay_, thawMargin_);
    }

    // ---------------------------------------------------------------- deposits and lanes

    /// @inheritdoc IPaymentEscrow
    function deposit(uint256 amount) external nonReentrant {
        require(amount != 0, ZeroAmount());
        uint256 total = _deposits[msg.sender] + amount;
        _deposits[msg.sender] = total;
        emit Deposited(msg.sender, amount, total);
        _pullExact(msg.sender, amount);
    }

    /// @inheritdoc IPaymentEscrow
    function depositAndAllocate(address[] calldata providers, uint256[] calldata amounts) external nonReentrant {
        require(providers.length == amounts.length, LengthMismatch());
        uint256 sum;
        for (uint256 i; i < amounts.length; ++i) {
            sum += amounts[i];
        }
        require(sum != 0, ZeroAmount());
        uint256 total = _deposits[msg.sender] + sum;
        _deposits[msg.sender] = total;
        emit Deposited(msg.sender, sum, total);
        _allocate(msg.sender, providers, amounts);
        _pullExact(msg.sender, sum);
    }

    /// @inheritdoc IPaymentEscrow
    function withdrawDeposit(uint256 amount) external nonReentrant {
        require(amount != 0, ZeroAmount());
        uint256 available = _deposits[msg.sender];
        require(amount <= available, InsufficientDeposit(msg.sender, amount, available));
        // Cannot underflow: checked just above.
        unchecked {
            _deposits[msg.sender] = available - amount;
        }
        emit DepositWithdrawn(msg.sender, amount, available - amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IPaymentEscrow
    function allocate(address payer, address[] calldata providers, uint256[] calldata amounts) external {
        require(providers.length == amounts.length, LengthMismatch());
        if (msg.sender != payer) {
            Signer storage s = _signers[payer][msg.sender];
            require(s.canAllocate && _valid(s), NotAllocator(payer, msg.sender));
        }
        _allocate(payer, providers, amounts);
    }

    /// @inheritdoc IPaymentEscrow
    function thaw(address provider, uint256 amount) external {
        require(amount != 0, ZeroAmount());
        Lane storage lane = _lanes[msg.sender][provider];
        require(amount <= lane.balance, InsufficientLane(msg.sender, provider, amount, lane.balance));
        uint256 thawEnd = block.timestamp + _thawDelay();
        lane.thawing = uint128(amount);
        lane.thawEnd = thawEnd.toUint40();
        emit ThawStarted(msg.sender, provider, amount, thawEnd);
    }

    /// @inheritdoc IPaymentEscrow
    function cancelThaw(address provider) external {
        Lane storage lane = _lanes[msg.sender][provider];
        require(lane.thawEnd != 0, NothingThawing(msg.sender, provider));
        lane.thawing = 0;
        lane.thawEnd = 0;
        emit ThawCancelled(msg.sender, provider);
    }

    /// @inheritdoc IPaymentEscrow
    function withdrawThawed(address provider) external nonReentrant returns (uint256 amount) {
        Lane storage lane = _lanes[msg.sender][provider];
        uint256 thawEnd = lane.thawEnd;
        require(thawEnd != 0, NothingThawing(msg.sender, provider));
        require(block.timestamp >= thawEnd, ThawNotReady(thawEnd));
        // Collections during the delay came out of the balance first: only what is left goes.
        uint256 balance = lane.balance;
        amount = lane.thawing < balance ? lane.thawing : balance;
        // Cannot underflow: amount <= balance.
        unchecked {
            lane.balance = uint128(balance - amount);
        }
        lane.thawing = 0;
        lane.thawEnd = 0;
        emit ThawWithdrawn(msg.sender, provider, amount, balance - amount);
        if (amount != 0) _token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- signers

    /// @inheritdoc IPaymentEscrow
    function authorizeSigner(address signer, uint64 expiry, bool canAllocate, bytes calldata proof) external {
        require(expiry > block.timestamp, ExpiryInPast(expiry));
        bytes32 digest =
            _hashTypedDataV4(keccak256(abi.encode(SIGNER_AUTHORIZATION_TYPEHASH, msg.sender, expiry)));
        require(
            signer != address(0) && SignatureChecker.isValidSignatureNow(signer, digest, proof),
            InvalidSignerProof(msg.sender, signer)
        );
        _signers[msg.sender][signer] = Signer(expiry, 0, canAllocate);
        emit SignerAuthorized(msg.sender, signer, expiry, canAllocate);
    }

    /// @inheritdoc IPaymentEscrow
    function thawSigner(address signer) external {
        Signer storage s = _signers[msg.sender][signer];
        require(s.expiry != 0, UnknownSigner(msg.sender, signer));
        uint256 thawEnd = block.timestamp + _thawDelay();
        s.thawEnd = thawEnd.toUint40();
        emit SignerThawStarted(msg.sender, signer, thawEnd);
    }

    /// @inheritdoc IPaymentEscrow
    function cancelSignerThaw(address signer) external {
        Signer storage s = _signers[msg.sender][signer];
        require(s.thawEnd != 0, NothingThawing(msg.sender, signer));
        s.thawEnd = 0;
        emit SignerThawCancelled(msg.sender, signer);
    }

    /// @inheritdoc IPaymentEscrow
    function revokeSigner(address signer) external {
        Signer storage s = _signers[msg.sender][signer];
        uint256 thawEnd = s.thawEnd;
        require(s.expiry != 0 && thawEnd != 0, NothingThawing(msg.sender, signer));
        require(block.timestamp >= thawEnd, ThawNotReady(thawEnd));
        delete _signers[msg.sender][signer];
        emit SignerRevoked(msg.sender, signer);
    }

    // ---------------------------------------------------------------- collection

    /// @inheritdoc IPaymentEscrow
    function collect(ReceiptAggregateVoucher[] calldata vouchers, bytes[] calldata signatures)
        external
        nonReentrant
        returns (uint256 paid)
    {
        require(vouchers.length == signatures.length, LengthMismatch());
        for (uint256 i; i < vouchers.length; ++i) {
            ReceiptAggregateVoucher calldata v = vouchers[i];
            require(v.provider == msg.sender, NotVoucherProvider(msg.sender, v.provider));
            _checkVoucherSignature(v, signatures[i]);
            Lane storage lane = _lanes[v.payer][v.provider];
            (uint256 balance, uint256 collected) = (lane.balance, lane.collected);
            require(
                v.cumulativeValue > collected,
                VoucherNotNewer(v.payer, v.provider, v.cumulativeValue, collected)
            );
            // Cannot underflow: cumulativeValue > collected; amount <= balance.
            uint256 amount;
            unchecked {
                amount = v.cumulativeValue - collected;
                if (amount > balance) amount = balance;
                if (amount == 0) continue;
                balance -= amount;
                collected += amount;
                paid += amount;
            }
            lane.balance = uint128(balance);
            lane.collected = uint128(collected);
            emit Collected(v.payer, v.provider, amount, collected, v.cumulativeValue, balance);
        }
        require(paid != 0, NothingCollected());
        _token.safeTransfer(msg.sender, paid);
    }

    // ---------------------------------------------------------------- provider bonds

    /// @inheritdoc IPaymentEscrow
    function depositBond(uint256 amount) external nonReentrant {
        require(amount != 0, ZeroAmount());
        Bond storage b = _bonds[msg.sender];
        uint256 total = b.amount + amount;
        b.amount = total.toUint128();
        emit BondDeposited(msg.sender, amount, total);
        _pullExact(msg.sender, amount);
    }

    /// @inheritdoc IPaymentEscrow
    function thawBond(uint256 amount) external {
        require(amount != 0, ZeroAmount());
        Bond storage b = _bonds[msg.sender];
        require(amount <= b.amount, InsufficientDeposit(msg.sender, amount, b.amount));
        uint256 thawEnd = block.timestamp + _thawDelay();
        b.thawing = uint128(amount);
        b.thawEnd = thawEnd.toUint40();
        emit BondThawStarted(msg.sender, amount, thawEnd);
    }

    /// @inheritdoc IPaymentEscrow
    function withdrawBond() external nonReentrant returns (uint256 amount) {
        Bond storage b = _bonds[msg.sender];
        uint256 thawEnd = b.thawEnd;
        require(thawEnd != 0, NothingThawing(msg.sender, msg.sender));
        require(block.timestamp >= thawEnd, ThawNotReady(thawEnd));
        if (_settlement != address(0)) {
            uint256 until = IBatchSettlement(_settlement).lockedUntil(msg.sender);
            require(block.timestamp >= until, BondLocked(msg.sender, until));
        }
        uint256 total = b.amount;
        amount = b.thawing < total ? b.thawing : total;
        // Cannot underflow: amount <= total.
        unchecked {
            b.amount = uint128(total - amount);
        }
        b.thawing = 0;
        b.thawEnd = 0;
        emit BondWithdrawn(msg.sender, amount, total - amount);
        if (amount != 0) _token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IPaymentEscrow
    function seizeBond(address provider, address payer, uint256 amount) external returns (uint256 seized) {
        require(msg.sender == _settlement && msg.sender != address(0), OnlySettlement(msg.sender));
        Bond storage b = _bonds[provider];
        uint256 total = b.amount;
        seized = amount < total ? amount : total;
        // Cannot underflow: seized <= total. Tokens stay here: they move from bond to deposit.
        unchecked {
            b.amount = uint128(total - seized);
        }
        _deposits[payer] += seized;
        emit BondSeized(provider, payer, seized, total - seized);
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IPaymentEscrow
    function setParameters(uint256 minThawDelay_, uint256 thawMargin_) external onlyOwner {
        _setParameters(minThawDelay_, thawMargin_);
    }

    /// @inheritdoc IPaymentEscrow
    function setSettlement(address settlement_) external onlyOwner {
        require(_settlement == address(0), SettlementAlreadySet());
        require(settlement_ != address(0), InvalidParameter());
        _settlement = settlement_;
        emit SettlementSet(settlement_);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IPaymentEscrow
    function thawDelay() external view returns (uint256) {
        return _thawDelay();
    }

    /// @inheritdoc IPaymentEscrow
    function depositOf(address payer) external view returns (uint256) {
        return _deposits[payer];
    }

    /// @inheritdoc IPaymentEscrow
    function getLane(address payer, address provider) external view returns (Lane memory) {
        return _lanes[payer][provider];
    }

    /// @inheritdoc IPaymentEscrow
    function getSigner(address payer, address signer) external view returns (Signer memory) {
        return _signers[payer][signer];
    }

    /// @inheritdoc IPaymentEscrow
    function isValidSigner(address payer, address signer) external view returns (bool) {
        return signer == payer || _valid(_signers[payer][signer]);
    }

    /// @inheritdoc IPaymentEscrow
    function getBond(address provider) external view returns (Bond memory) {
        return _bonds[provider];
    }

    /// @inheritdoc IPaymentEscrow
    function hashVoucher(ReceiptAggregateVoucher calldata voucher) external view returns (bytes32) {
        return _voucherDigest(voucher);
    }

    /// @inheritdoc IPaymentEscrow
    function hashPaymentReceipt(PaymentReceipt calldata r) external view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(PAYMENT_RECEIPT_TYPEHASH, r.payer, r.provider, r.requestId, r.value, r.timestamp))
        );
    }

    /// @inheritdoc IPaymentEscrow
    function minThawDelay() external view returns (uint256) {
        return _minThawDelay;
    }

    /// @inheritdoc IPaymentEscrow
    function thawMargin() external view returns (uint256) {
        return _thawMargin;
    }

    /// @inheritdoc IPaymentEscrow
    function paymentToken() external view returns (address) {
        return address(_token);
    }

    /// @inheritdoc IPaymentEscrow
    function settlement() external view returns (address) {
        return _settlement;
    }

    /// @inheritdoc IPaymentEscrow
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internal

    function _allocate(address payer, address[] calldata providers, uint256[] calldata amounts) internal {
        uint256 available = _deposits[payer];
        for (uint256 i; i < providers.length; ++i) {
            uint256 amount = amounts[i];
            require(amount != 0, ZeroAmount());
            require(amount <= available, InsufficientDeposit(payer, amount, available));
            // Cannot underflow: checked just above.
            unchecked {
                available -= amount;
            }
            Lane storage lane = _lanes[payer][providers[i]];
            uint256 balance = lane.balance + amount;
            lane.balance = balance.toUint128();
            emit Allocated(payer, providers[i], amount, balance, msg.sender);
        }
        _deposits[payer] = available;
    }

    /// @dev The payer itself (an EOA, or a contract wallet through ERC-1271) or a valid signer.
    function _checkVoucherSignature(ReceiptAggregateVoucher calldata v, bytes calldata signature) internal view {
        bytes32 digest = _voucherDigest(v);
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err == ECDSA.RecoverError.NoError) {
            if (recovered == v.payer) return;
            if (_valid(_signers[v.payer][recovered])) return;
        }
        require(
            v.payer.code.length != 0 && SignatureChecker.isValidERC1271SignatureNow(v.payer, digest, signature),
            InvalidVoucherSignature(v.payer, v.provider)
        );
    }

    function _voucherDigest(ReceiptAggregateVoucher calldata v) internal view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(VOUCHER_TYPEHASH, v.payer, v.provider, v.cumulativeValue, v.timestamp))
        );
    }

    /// @dev Authorized (expiry set), not expired. A thawing signer stays valid until revoked:
    /// the thaw is the notice providers get to collect its vouchers.
    function _valid(Signer storage s) internal view returns (bool) {
        return block.timestamp < s.expiry;
    }

    /// @dev Longer than everything a batch can still cost its provider, plus the margin.
    function _thawDelay() internal view returns (uint256) {
        uint256 horizon = _settlement == address(0) ? 0 : IBatchSettlement(_settlement).settlementHorizon();
        uint256 floor = horizon + _thawMargin;
        return _minThawDelay > floor ? _minThawDelay : floor;
    }

    function _pullExact(address from, uint256 amount) internal {
        uint256 before = _token.balanceOf(address(this));
        _token.safeTransferFrom(from, address(this), amount);
        uint256 received = _token.balanceOf(address(this)) - before;
        require(received == amount, TokenTransferShortfall(amount, received));
    }

    function _setParameters(uint256 minThawDelay_, uint256 thawMargin_) internal {
        require(minThawDelay_ != 0 && thawMargin_ != 0, InvalidParameter());
        _minThawDelay = minThawDelay_.toUint40();
        _thawMargin = thawMargin_.toUint40();
        emit ParametersSet(minThawDelay_, thawMargin_);
    }
}
