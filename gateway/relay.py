"""Checking signed job requests and relaying them with the gateway's relayer key.

Everything a relayed transaction would revert on is checked first, off-chain, so a bad request
costs neither gas nor a nonce: the EIP-712 signature against this deployment's domain (chain id
and market address; ERC-1271 for contract wallets), the client's JobRequest nonce, the deadline
against the chain's clock, the model (from the index), the input hash, and the client's balance
plus allowance or EIP-2612 permit. The relayed call is then gas-estimated by
:class:`contracts.chain.TxSender`, which surfaces any remaining revert as a decoded custom error
before anything is sent; those errors map to the same reasons.

The relayer only pays gas: the market pulls the escrow from the client's wallet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from pydantic import SecretStr
from web3.exceptions import Web3Exception

from contracts import eip712
from contracts.bindings import Hearth
from contracts.errors import ChainError
from contracts.types import JobRequest, Permit
from gateway.errors import (
    BadRequestError,
    DeadlineError,
    GatewayError,
    InvalidSignatureError,
    NonceError,
    PaymentError,
    UnavailableError,
    UnknownModelError,
    UpstreamError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
ERC1271_MAGIC = bytes.fromhex("1626ba7e")
MAX_UINT256 = 2**256 - 1
ERC1271_ABI = [{
    "type": "function", "name": "isValidSignature", "stateMutability": "view",
    "inputs": [{"name": "hash", "type": "bytes32"}, {"name": "signature", "type": "bytes"}],
    "outputs": [{"name": "", "type": "bytes4"}],
}]

#: custom errors of a relayed call -> the API error they mean
_REVERTS: dict[str, tuple[type[GatewayError], str]] = {
    "InvalidAccountNonce": (NonceError, "nonce_used"),
    "InvalidSignature": (InvalidSignatureError, "invalid_signature"),
    "DeadlinePassed": (DeadlineError, "deadline_expired"),
    "SignatureExpired": (DeadlineError, "deadline_expired"),
    "UnknownModel": (UnknownModelError, "unknown_model"),
    "ZeroPayment": (BadRequestError, "zero_payment"),
    "ERC20InsufficientBalance": (PaymentError, "insufficient_balance"),
    "ERC20InsufficientAllowance": (PaymentError, "insufficient_allowance"),
    "EnforcedPause": (UnavailableError, "market_paused"),
}


def signable_digest(msg: SignableMessage) -> bytes:
    """The EIP-191 digest a signature of ``msg`` signs (what ERC-1271 wallets are asked about)."""
    return bytes(keccak(b"\x19" + msg.version + msg.header + msg.body))


def map_chain_error(exc: ChainError) -> GatewayError:
    if exc.error_name in _REVERTS:
        cls, reason = _REVERTS[exc.error_name]
        return cls(f"the market would revert: {exc}", reason=reason, revert=exc.error_name)
    return UpstreamError(f"relay failed: {exc}", revert=exc.error_name)


@dataclass(frozen=True)
class Relayed:
    job_id: int
    tx_hash: str
    block_number: int


class ChainAccess:
    """The deployment, read through its RPC, and the relayer's transaction sender."""

    def __init__(self, hearth: Hearth, relayer_key: SecretStr | None) -> None:
        self.hearth = hearth
        self.w3 = hearth.w3
        self.chain_id = hearth.chain_id
        self.market = hearth.market.address
        self._key = relayer_key
        self.relayer_address: str | None = (
            Account.from_key(relayer_key.get_secret_value()).address if relayer_key else None)
        self._client_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._token_domain: dict[str, Any] | None = None
        self._min_stake: int | None = None
        self._market_approved = False

    # ------------------------------------------------------------ plumbing

    def call(self, fn: Callable[[], T]) -> T:
        """Runs a chain read, turning connection failures into 503 and reverts into 4xx."""
        try:
            return fn()
        except ChainError as exc:
            raise map_chain_error(exc) from None
        except GatewayError:
            raise
        except (Web3Exception, OSError, ValueError) as exc:
            if "execution reverted" in str(exc):
                raise self.hearth.decoder.from_exception(exc) from None
            raise UnavailableError(f"the chain's RPC did not answer: {exc}", reason="chain_unavailable") from None
        except Exception as exc:  # requests' ConnectionError and friends
            raise UnavailableError(f"the chain's RPC did not answer: {exc}", reason="chain_unavailable") from None

    def relayer_key(self) -> str:
        if self._key is None:
            raise UnavailableError("this gateway has no relayer key (set HEARTH_GATEWAY_RELAYER_KEY)",
                                   reason="relayer_unavailable")
        return self._key.get_secret_value()

    def client_lock(self, client: str) -> threading.Lock:
        with self._locks_guard:
            return self._client_locks.setdefault(client, threading.Lock())

    def chain_now(self) -> int:
        return int(self.call(lambda: self.w3.eth.get_block("latest"))["timestamp"])

    def next_nonce(self, client: str) -> int:
        return int(self.call(lambda: self.hearth.market.functions.nonces(client).call()))

    def token_balance(self, owner: str) -> int:
        return int(self.call(lambda: self.hearth.usd.functions.balanceOf(owner).call()))

    def allowance(self, owner: str, spender: str) -> int:
        return int(self.call(lambda: self.hearth.usd.functions.allowance(owner, spender).call()))

    def min_stake(self) -> int:
        if self._min_stake is None:
            self._min_stake = int(self.call(lambda: self.hearth.staking.functions.minStake().call()))
        return self._min_stake

    def token_domain(self) -> dict[str, Any]:
        if self._token_domain is None:
            _, name, version, chain_id, contract, _, _ = self.call(
                lambda: self.hearth.usd.functions.eip712Domain().call())
            self._token_domain = {"name": name, "version": version, "chainId": chain_id,
                                  "verifyingContract": contract}
        return self._token_domain

    # ------------------------------------------------------------ checks

    def verify_signature(self, signer: str, msg: SignableMessage, signature: bytes, what: str) -> None:
        """``signature`` of ``msg`` is by ``signer``: ecrecover for accounts, ERC-1271 for contracts."""
        code = self.call(lambda: self.w3.eth.get_code(signer))  # type: ignore[arg-type]
        if code:
            wallet = self.w3.eth.contract(address=to_checksum_address(signer), abi=ERC1271_ABI)
            try:
                magic = wallet.functions.isValidSignature(signable_digest(msg), signature).call()
            except Exception:  # noqa: BLE001 - a reverting wallet says no
                magic = b""
            if bytes(magic) != ERC1271_MAGIC:
                raise InvalidSignatureError(f"{what}: the wallet contract {signer} rejects the signature")
            return
        try:
            recovered = Account.recover_message(msg, signature=HexBytes(signature))
        except Exception:  # noqa: BLE001 - malformed v, r, s or length
            raise InvalidSignatureError(f"{what}: malformed signature") from None
        if recovered != signer:
            raise InvalidSignatureError(
                f"{what}: the signature is not by {signer} for this deployment (chain {self.chain_id}, "
                f"market {self.market})", recovered=recovered)

    def check_request(self, req: JobRequest, signature: bytes, permit: Permit | None, *, margin_s: int) -> None:
        """Everything ``postJobWithSig`` checks, off-chain; raises the matching API error."""
        if req.max_payment == 0:
            raise BadRequestError("maxPayment must be positive", reason="zero_payment")
        msg = encode_typed_data(eip712.domain(self.chain_id, self.market), eip712.JOB_REQUEST_TYPES,
                                eip712.job_request_message(req))
        self.verify_signature(req.client, msg, signature, "job request")
        now = self.chain_now()
        if req.deadline <= now + margin_s:
            raise DeadlineError(
                f"deadline {req.deadline} is past or leaves less than {margin_s}s (chain time {now})",
                deadline=req.deadline, chain_time=now)
        expected = self.next_nonce(req.client)
        if req.nonce != expected:
            raise NonceError(
                f"nonce {req.nonce} is {'already used' if req.nonce < expected else 'ahead'}: "
                f"the next nonce of {req.client} is {expected}",
                reason="nonce_used" if req.nonce < expected else "nonce_out_of_order", expected=expected)
        balance = self.token_balance(req.client)
        if balance < req.max_payment:
            raise PaymentError(f"{req.client} holds {balance} < maxPayment {req.max_payment}",
                               reason="insufficient_balance", balance=str(balance))
        allowance = self.allowance(req.client, self.market)
        if allowance >= req.max_payment:
            return
        if permit is None or permit.value == 0:
            raise PaymentError(
                f"the market may pull {allowance} < maxPayment {req.max_payment}: approve it or send a permit",
                reason="insufficient_allowance", allowance=str(allowance))
        self.check_permit(req, permit, now)

    def check_permit(self, req: JobRequest, permit: Permit, now: int) -> None:
        if permit.value < req.max_payment:
            raise PaymentError(f"permit value {permit.value} < maxPayment {req.max_payment}",
                               reason="insufficient_allowance")
        if permit.deadline < now:
            raise DeadlineError(f"permit expired at {permit.deadline} (chain time {now})", reason="permit_expired")
        token_nonce = int(self.call(lambda: self.hearth.usd.functions.nonces(req.client).call()))
        msg = encode_typed_data(self.token_domain(), eip712.PERMIT_TYPES, eip712.permit_message(
            req.client, self.market, permit.value, token_nonce, permit.deadline))
        sig = permit.r + permit.s + bytes([permit.v])
        try:
            self.verify_signature(req.client, msg, sig, "permit")
        except InvalidSignatureError as exc:
            raise InvalidSignatureError(exc.message, reason="invalid_permit") from None

    # ------------------------------------------------------------ relaying

    def relay(self, req: JobRequest, signature: bytes, permit: Permit | None) -> Relayed:
        key = self.relayer_key()
        t0 = time.perf_counter()
        job_id, rcpt = self.call(lambda: self.hearth.post_job_with_sig(key, req, signature, permit))
        tx = "0x" + bytes(rcpt["transactionHash"]).hex()
        log.info("job %d relayed tx %s client %s block %d in %.0f ms", job_id, tx, req.client,
                 rcpt["blockNumber"], 1000 * (time.perf_counter() - t0),
                 extra={"job_id": job_id, "tx_hash": tx, "client": req.client})
        return Relayed(job_id, tx, int(rcpt["blockNumber"]))

    # ------------------------------------------------------------ API-key jobs (relayer pays)

    def pull(self, wallet: str, amount: int) -> str:
        """``transferFrom(wallet, relayer, amount)`` under the wallet's allowance to the relayer."""
        key = self.relayer_key()
        h = self.hearth
        rcpt = self.call(lambda: h.sender(key).send(h.usd.functions.transferFrom(wallet, self.relayer_address, amount)))
        return "0x" + bytes(rcpt["transactionHash"]).hex()

    def give_back(self, wallet: str, amount: int) -> str:
        key = self.relayer_key()
        h = self.hearth
        rcpt = self.call(lambda: h.sender(key).send(h.usd.functions.transfer(wallet, amount)))
        return "0x" + bytes(rcpt["transactionHash"]).hex()

    def post_as_relayer(self, model_id: bytes, input_hash: bytes, amount: int, deadline: int) -> Relayed:
        key = self.relayer_key()
        h = self.hearth
        if not self._market_approved:
            assert self.relayer_address is not None
            if self.allowance(self.relayer_address, self.market) < 2**255:
                self.call(lambda: h.sender(key).send(h.usd.functions.approve(self.market, MAX_UINT256)))
            self._market_approved = True
        job_id, rcpt = self.call(lambda: h.post_job(key, model_id, input_hash, amount, deadline))
        tx = "0x" + bytes(rcpt["transactionHash"]).hex()
        log.info("job %d posted for an API key tx %s block %d", job_id, tx, rcpt["blockNumber"],
                 extra={"job_id": job_id, "tx_hash": tx})
        return Relayed(job_id, tx, int(rcpt["blockNumber"]))
