"""Exceptions of the contracts package (every one derives from :class:`ContractsError`), and the
sentences that explain a contract's custom errors to a person (:func:`explain_revert`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


class ContractsError(Exception):
    """Root of everything the contracts package raises."""


class ToolchainError(ContractsError):
    """A compiler or node binary is missing or unusable."""


class CompileError(ContractsError):
    """Solidity did not compile; the message lists ``file:line: message`` per error."""


class ManifestError(ContractsError, ValueError):
    """The deployment manifest is missing, malformed or for another chain."""


class InvalidJobInputError(ContractsError, ValueError):
    """A job input or output blob is not in the job format (see :mod:`contracts.jobio`)."""


class ChainError(ContractsError):
    """A transaction reverted or the chain answered unexpectedly."""

    def __init__(self, message: str, error_name: str | None = None, args: tuple[object, ...] = (),
                 action: str | None = None) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.error_args = args
        #: the contract function that reverted (``finalize``), when known
        self.action = action


# ---------------------------------------------------------------------------- revert explanations
#
# One table, keyed by custom error name, turns a decoded revert into a sentence that names the
# job, the state it is in and what to do. The CLI prints it, the gateway can put it in an API
# error's message; ``ChainError.error_name``/``error_args`` stay for code that branches on the
# error. An error missing from the table (a new or renamed one) still reads as
# ``<action> was refused: <Name> (arg=value, ...)`` with the ABI's argument names, so nothing
# reaches a user as raw ``Name(1, 3)``.

#: Job states by their on-chain ``Status`` value (``contracts.types.Status``), with what one can do next.
_STATES: dict[int, tuple[str, str]] = {
    0: ("unknown", "check the job id"),
    1: ("posted and waiting for a provider",
        "a staked provider can claim it; past its deadline the client can refund it"),
    2: ("claimed by a provider who has not delivered yet",
        "wait for the receipt; past its deadline anyone can refund it"),
    3: ("delivered and in its challenge window", "finalize it once the challenge window has closed"),
    4: ("challenged, with its dispute still open", "wait for the committee's verdict, then finalize or refund"),
    5: ("finalized (settled)", "nothing more can happen to it: withdraw any market credit"),
    6: ("refunded (settled)", "nothing more can happen to it: withdraw any market credit"),
}

#: Contract function -> what the user tried, as a phrase ("cannot be <verb>").
_ACTIONS: dict[str, str] = {
    "claimJob": "claimed", "submitReceipt": "delivered", "finalize": "finalized", "refund": "refunded",
    "challenge": "challenged", "resolveDispute": "resolved", "commitVote": "voted on", "revealVote": "voted on",
}


@dataclass(frozen=True)
class Token:
    symbol: str
    decimals: int

    def show(self, wei: object) -> str:
        if not isinstance(wei, int):
            return str(wei)
        q = Decimal(wei).scaleb(-self.decimals)
        text = f"{q:,.{self.decimals}f}".rstrip("0").rstrip(".")
        return f"{text} {self.symbol}"


PAYMENT_TOKEN = Token("hUSD", 6)
STAKE_TOKEN = Token("HST", 18)
#: Contracts (by manifest name) whose amounts are in the stake token; all others are in the payment token.
_STAKE_CONTRACTS = {"Staking", "HearthStake"}


@dataclass(frozen=True)
class RevertContext:
    """What the caller knows about the reverted call: the contract function (``finalize``), the
    contract's manifest name (``JobMarket``), the sender, and the ABI names of the error's inputs."""

    action: str | None = None
    contract: str | None = None
    sender: str | None = None
    arg_names: tuple[str, ...] = ()

    @property
    def token(self) -> Token:
        return STAKE_TOKEN if self.contract in _STAKE_CONTRACTS else PAYMENT_TOKEN

    @property
    def doing(self) -> str:
        return f"`{self.action}`" if self.action else "the call"


def _when(ts: object) -> str:
    if not isinstance(ts, int):
        return str(ts)
    try:
        return f"{ts} ({datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M:%S} UTC chain time)"
    except (OverflowError, OSError, ValueError):
        return str(ts)


def _hex(v: object) -> str:
    return "0x" + v.hex() if isinstance(v, bytes) else str(v)


def _wrong_status(a: tuple[Any, ...], c: RevertContext) -> str:
    job, status = a[0], int(a[1])
    state, next_step = _STATES.get(status, (f"in state {status}", "check `job status`"))
    verb = _ACTIONS.get(c.action or "")
    refused = f"so it cannot be {verb}" if verb else f"so {c.doing} is not possible now"
    return f"job {job} is {state}, {refused}: {next_step}"


def _insufficient_free_stake(a: tuple[Any, ...], c: RevertContext) -> str:
    provider, requested, free = a
    what = {"claimJob": "the job's collateral needs", "requestUnbond": "the unbond asks for"}.get(
        c.action or "", "this needs")
    return (f"provider {provider} has {STAKE_TOKEN.show(free)} of free stake but {what} "
            f"{STAKE_TOKEN.show(requested)}: stake more, or wait until collateral locked by its open jobs is "
            f"released (stake that is locked or unbonding is not free)")


Explainer = Callable[[tuple[Any, ...], RevertContext], str]

#: Custom error name -> sentence. Add an entry when a contract gains an error users can hit.
REVERT_MESSAGES: dict[str, Explainer] = {
    # JobMarket
    "UnknownJob": lambda a, c: f"there is no job {a[0]} on this market: check the job id",
    "JobMismatch": lambda a, c: (f"the record of job {a[0]} sent with the call is not the one on-chain (it changed "
                                 f"meanwhile, or it was built from an old event): read the job again and retry"),
    "WrongStatus": _wrong_status,
    "ZeroPayment": lambda a, c: "the maximum payment is zero: a job must escrow a positive payment",
    "DeadlinePassed": lambda a, c: (f"the job's deadline {_when(a[0])} is not in the future: "
                                    f"choose a deadline after the chain's current time"),
    "DeadlineNotPassed": lambda a, c: (f"job {a[0]} cannot be refunded before its deadline {_when(a[1])}: wait for "
                                       f"the deadline, or for its provider to deliver"),
    "SignatureExpired": lambda a, c: f"the signed request expired at {_when(a[0])}: sign a new one",
    "InvalidSignature": lambda a, c: "the signature does not match the signed data or the signer: sign again",
    "NotJobProvider": lambda a, c: (f"{a[1]} is not the provider that claimed job {a[0]}: only that provider "
                                    f"can deliver it"),
    "ModelMismatch": lambda a, c: (f"the receipt for job {a[0]} names model {_hex(a[2])}, but the job is for "
                                   f"{_hex(a[1])}: run the job's model"),
    "ZeroUnits": lambda a, c: f"the receipt for job {a[0]} counts zero units: a receipt must count the work done",
    "ChallengeWindowClosed": lambda a, c: (f"job {a[0]}'s challenge window has closed: it can no longer be "
                                           f"challenged, only finalized"),
    "ChallengeWindowOpen": lambda a, c: (f"job {a[0]} is delivered and its challenge window is open until "
                                         f"{_when(a[1])}: finalize it after that"),
    "ChallengerNotEligible": lambda a, c: (f"{a[0]} may not challenge: a challenger must be an active staked "
                                           f"provider that is not the job's provider"),
    "NotCommitteeMember": lambda a, c: f"{a[1]} is not on the committee of job {a[0]}'s dispute, so it cannot vote",
    "AlreadyCommitted": lambda a, c: f"{a[1]} already committed a vote on job {a[0]}'s dispute",
    "AlreadyRevealed": lambda a, c: f"{a[1]} already revealed its vote on job {a[0]}'s dispute",
    "CommitPhaseOver": lambda a, c: f"the commit phase of job {a[0]}'s dispute is over: votes can only be revealed",
    "RevealPhaseNotOpen": lambda a, c: f"the reveal phase of job {a[0]}'s dispute is not open: wait for it",
    "RevealDoesNotMatchCommit": lambda a, c: (f"{a[1]}'s reveal on job {a[0]} does not match its commitment: "
                                              f"reveal the same output hash and salt"),
    "DisputeStillOpen": lambda a, c: f"job {a[0]}'s dispute is still open: wait until its voting ends",
    "DisputeNotEscalated": lambda a, c: f"job {a[0]}'s dispute was not escalated, so governance cannot settle it",
    "NothingToWithdraw": lambda a, c: (f"{a[0]} has no market credit to withdraw: credit comes from finalized or "
                                       f"refunded jobs (`hearth balances` shows it)"),
    "TokenTransferShortfall": lambda a, c: (f"the payment token delivered {c.token.show(a[1])} instead of "
                                            f"{c.token.show(a[0])} (a fee-on-transfer token?): it is not supported"),
    "InvalidParameter": lambda a, c: f"{c.doing} was given an invalid parameter",
    # ModelRegistry
    "UnknownModel": lambda a, c: f"model {_hex(a[0])} is not registered: `hearth model list` shows the models",
    "ModelAlreadyRegistered": lambda a, c: f"model {_hex(a[0])} is already registered",
    "ZeroModelId": lambda a, c: "the model id is zero",
    "ZeroPrice": lambda a, c: "the price is zero: a model needs a positive price per unit",
    # Staking
    "AlreadyRegistered": lambda a, c: f"{a[0]} is already a registered provider",
    "NotRegistered": lambda a, c: f"{a[0]} is not a registered provider: register first",
    "ZeroAmount": lambda a, c: "the amount is zero: give a positive amount",
    "InsufficientFreeStake": _insufficient_free_stake,
    "NothingUnbonding": lambda a, c: f"{a[0]} has no stake unbonding: request an unbond first",
    "UnbondingNotReady": lambda a, c: f"{a[0]}'s unbonding stake can be withdrawn from {_when(a[1])}, not yet",
    "OnlyMarket": lambda a, c: f"{a[0]} is not the job market: only the market may do this",
    "ProviderNotActive": lambda a, c: (f"provider {a[0]} is not active (not registered, staked below the minimum, "
                                       f"or jailed): stake at least the minimum"),
    "ModelNotServed": lambda a, c: (f"provider {a[0]} does not serve model {_hex(a[1])}: serve it first "
                                    f"(setServing)"),
    "CollateralUnderflow": lambda a, c: (f"provider {a[0]} has {STAKE_TOKEN.show(a[2])} locked, less than the "
                                         f"{STAKE_TOKEN.show(a[1])} to release"),
    "ClaimExpired": lambda a, c: (f"job {a[0]}'s claim expired at {_when(a[1])}: it can no longer be delivered; "
                                  f"anyone may release the claim and the job is open again"),
    "ClaimNotExpired": lambda a, c: (f"job {a[0]}'s claim runs until {_when(a[1])}: it can be released only after "
                                     f"that, if still undelivered"),
    "DrawNotReady": lambda a, c: (f"job {a[0]}'s committee can be drawn once block {a[1]} is mined (its hash is "
                                  f"the seed): wait a block or two and retry"),
    "DrawExpired": lambda a, c: (f"the draw block {a[1]} of job {a[0]}'s dispute is too old for its hash to be "
                                 f"read: the dispute can only be settled neutrally now"),
    "WrongPhase": lambda a, c: (f"job {a[0]}'s dispute is in phase {a[1]}, so {c.doing} is not possible now: "
                                f"`hearth job status {a[0]}` shows where it stands"),
    "EscalationClosed": lambda a, c: (f"governance's time to decide job {a[0]}'s dispute ended at {_when(a[1])}: "
                                      f"anyone may now settle it neutrally"),
    "NoPendingParams": lambda a, c: "no parameter change is pending: propose one first",
    "ParamsNotReady": lambda a, c: f"the pending parameters take effect at {_when(a[0])}, not yet",
    "OwnershipCannotBeRenounced": lambda a, c: ("ownership cannot be renounced: every dispute needs a governance "
                                                "that can be reached; transfer ownership instead"),
    "RuntimeNotListed": lambda a, c: (f"runtime {_hex(a[1])} is not listed for model {_hex(a[0])}: run a runtime "
                                      f"the registry lists (`hearth model list`)"),
    "NumericsClassNotListed": lambda a, c: (f"numerics class {_hex(a[0])} is not one governance lists: register "
                                            f"with a listed GPU class"),
    "ExpectedPause": lambda a, c: "the contract is not paused, so it cannot be unpaused",
    # Staking (disputes and settlement)
    "StakeBelowMinimum": lambda a, c: (f"{STAKE_TOKEN.show(a[0])} is below the minimum stake of "
                                       f"{STAKE_TOKEN.show(a[1])}: stake at least the minimum to register"),
    "GpuClassTooLong": lambda a, c: f"the GPU class is {a[0]} bytes long, more than 32: use a shorter name",
    "TooManyModels": lambda a, c: f"provider {a[0]} already serves the most models allowed ({a[1]}): stop one first",
    "StakeLocked": lambda a, c: (f"provider {a[0]}'s stake backs batches that can still be challenged until "
                                 f"{_when(a[1])}: it can leave after that"),
    "OnlySettlement": lambda a, c: f"{a[0]} is not the settlement contract: only it may do this",
    "SettlementAlreadySet": lambda a, c: "the settlement contract is already set, once and for all",
    # PaymentEscrow
    "LengthMismatch": lambda a, c: "the lists of providers and amounts have different lengths",
    "InsufficientDeposit": lambda a, c: (f"payer {a[0]} has {PAYMENT_TOKEN.show(a[2])} deposited and unallocated, "
                                         f"less than the {PAYMENT_TOKEN.show(a[1])} asked: deposit more"),
    "NotAllocator": lambda a, c: f"{a[1]} may not allocate payer {a[0]}'s deposit: the payer authorizes allocators",
    "InsufficientLane": lambda a, c: (f"the lane from {a[0]} to provider {a[1]} holds {PAYMENT_TOKEN.show(a[3])}, "
                                      f"less than the {PAYMENT_TOKEN.show(a[2])} asked"),
    "NothingThawing": lambda a, c: f"nothing is thawing on the lane from {a[0]} to {a[1]}: start a thaw first",
    "ThawNotReady": lambda a, c: f"the thaw completes at {_when(a[0])}: withdraw after that",
    "ExpiryInPast": lambda a, c: f"the expiry {_when(a[0])} is not in the future: choose a later one",
    "InvalidSignerProof": lambda a, c: (f"the proof that {a[1]} holds its key for payer {a[0]} is not valid: sign "
                                        f"the authorization with the signer's own key"),
    "UnknownSigner": lambda a, c: (f"{a[1]} is not an authorized signer of payer {a[0]} (never authorized, "
                                   f"revoked or expired)"),
    "InvalidVoucherSignature": lambda a, c: (f"the voucher from payer {a[0]} to provider {a[1]} is not signed by "
                                             f"the payer or one of its authorized signers"),
    "NotVoucherProvider": lambda a, c: f"{a[0]} is not the voucher's provider {a[1]}: only it may collect",
    "VoucherNotNewer": lambda a, c: (f"the voucher from {a[0]} to {a[1]} adds up to {PAYMENT_TOKEN.show(a[2])}, "
                                     f"not more than the {PAYMENT_TOKEN.show(a[3])} already collected"),
    "NothingCollected": lambda a, c: "none of the vouchers had anything left to collect",
    "BondLocked": lambda a, c: f"provider {a[0]}'s bond is locked until {_when(a[1])}",
    # BatchSettlement
    "EmptyBatch": lambda a, c: "a batch must commit at least one leaf",
    "UnknownBatch": lambda a, c: f"there is no batch {a[0]}: check the batch id",
    "BatchMismatch": lambda a, c: (f"the record of batch {a[0]} sent with the call is not the one committed: "
                                   f"read the batch again"),
    "IndexOutOfRange": lambda a, c: f"batch {a[0]} has {a[2]} leaves, so leaf {a[1]} does not exist",
    "InvalidProof": lambda a, c: (f"the Merkle proof does not place that leaf at index {a[1]} of batch {a[0]}: "
                                  f"fetch the batch's published leaves and proofs again"),
    "WrongLeafStatus": lambda a, c: (f"leaf {a[1]} of batch {a[0]} is in state {a[2]}, so {c.doing} is not "
                                     f"possible now"),
    "RevealWindowClosed": lambda a, c: (f"the provider's time to reveal leaf {a[1]} of batch {a[0]} ended at "
                                        f"{_when(a[2])}"),
    "RevealWindowOpen": lambda a, c: (f"the provider may reveal leaf {a[1]} of batch {a[0]} until {_when(a[2])}: "
                                      f"wait until then"),
    "DrawWindowClosed": lambda a, c: (f"the committee for leaf {a[1]} of batch {a[0]} had to be drawn by "
                                      f"{_when(a[2])}"),
    "NotEligible": lambda a, c: (f"{a[0]} may not do this: it must be an active staked provider of the model "
                                 f"other than the batch's provider"),
    "PriceAboveCeiling": lambda a, c: (f"the quoted price {a[1]} for model {_hex(a[0])} is above the ceiling "
                                       f"{a[2]} governance set"),
    # OpenZeppelin
    "ERC20InsufficientBalance": lambda a, c: (f"{a[0]} holds {c.token.show(a[1])}, less than the "
                                              f"{c.token.show(a[2])} needed"),
    "ERC20InsufficientAllowance": lambda a, c: (f"the allowance to {a[0]} is {c.token.show(a[1])}, less than the "
                                                f"{c.token.show(a[2])} needed: approve more first"),
    "OwnableInvalidOwner": lambda a, c: f"{a[0]} cannot be the owner (the zero address?)",
    "ReentrancyGuardReentrantCall": lambda a, c: "the call re-entered the contract and was refused",
    "SafeERC20FailedOperation": lambda a, c: f"the token {a[0]} refused the transfer",
    "SafeCastOverflowedUintDowncast": lambda a, c: f"the value {a[1]} does not fit in {a[0]} bits: use a smaller one",
    "InvalidAccountNonce": lambda a, c: (f"nonce already used or out of order for {a[0]} (the next is {a[1]}): "
                                         f"sign again with the current nonce"),
    "EnforcedPause": lambda a, c: "the contract is paused by governance: try again later",
    "OwnableUnauthorizedAccount": lambda a, c: f"{a[0]} is not the owner: only governance may do this",
    "ERC2612ExpiredSignature": lambda a, c: f"the permit expired at {_when(a[0])}: sign a new one",
    "ERC2612InvalidSigner": lambda a, c: f"the permit was signed by {a[0]}, not by the owner {a[1]}",
    "ERC20InvalidApprover": lambda a, c: f"{a[0]} cannot approve a spender (the zero address?)",
    "ERC20InvalidSpender": lambda a, c: (f"{a[0]} cannot be allowed to spend tokens (the zero address?): check the "
                                         f"spender"),
    "ERC20InvalidSender": lambda a, c: f"tokens cannot be sent from {a[0]} (the zero address?)",
    "ERC20InvalidReceiver": lambda a, c: f"tokens cannot be sent to {a[0]} (the zero address?): check the recipient",
    "ECDSAInvalidSignature": lambda a, c: "the signature recovers to no signer: sign again",
    "ECDSAInvalidSignatureLength": lambda a, c: f"the signature is {a[0]} bytes long, not 65: send the whole signature",
    "ECDSAInvalidSignatureS": lambda a, c: ("the signature's s value is in the upper half of the curve order (a "
                                            "malleable signature): sign again with a standard signer"),
    "StringTooLong": lambda a, c: (f"the text {a[0]!r} is longer than the 31 bytes the contract keeps: use a "
                                   f"shorter one"),
    "InvalidShortString": lambda a, c: ("a name or version stored as a short string cannot be read: redeploy the "
                                        "contract"),
}


def _words(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()


def _show_arg(v: object) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_show_arg(x) for x in v) + ")"
    return str(v)


def generic_revert_message(name: str, args: tuple[Any, ...], ctx: RevertContext | None = None) -> str:
    """The fallback for an error with no entry: its name in words and its arguments with their ABI names."""
    c = ctx or RevertContext()
    names = c.arg_names if len(c.arg_names) == len(args) else tuple(f"arg{i}" for i in range(len(args)))
    shown = ", ".join(f"{n or f'arg{i}'}={_show_arg(v)}" for i, (n, v) in enumerate(zip(names, args, strict=True)))
    return f"{c.doing} was refused by the contract: {_words(name)} ({name}{', ' if shown else ''}{shown})"


def explain_revert(name: str, args: tuple[Any, ...], ctx: RevertContext | None = None) -> str:
    """A decoded custom error as a sentence for a person (see :data:`REVERT_MESSAGES`)."""
    c = ctx or RevertContext()
    fn = REVERT_MESSAGES.get(name)
    if fn is not None:
        try:
            return fn(args, c)
        except (IndexError, TypeError, ValueError):  # an error whose arguments changed shape: fall back
            pass
    return generic_revert_message(name, args, c)
