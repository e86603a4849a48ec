"""Checking signed job requests and relaying them with the gateway's relayer key.

Everything a relayed transaction would revert on is checked first, off-chain, so a bad request
costs neither gas nor a nonce: the EIP-712 signature against this deployment's domain (chain id
and market address; ERC-1271 for contract wallets), the client's JobRequest nonce, the deadline
against the chain's clock, the model (from the index), the input hash, and the client's balance
plus allowance or EIP-2612 permit. The relayed call is then gas-estimated by
:class:`contracts.chain.TxSender`, which surfaces any remaining revert as a decoded custom error
before anything is sent; those errors map to the same reasons.

The relayer only pays gas: the market pulls the escrow from the client's wallet.

Relaying does not wait for mining: the transaction is broadcast (``TxSender.submit``) and the
API answers 202 with its hash; :class:`RelayTracker` waits in the background and records the
outcome (mined with the job id, or reverted with the reason) for ``GET /v1/relays/{tx_hash}``.
The relayer's key keeps many transactions in flight, so concurrent clients do not queue behind
each other's blocks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from web3.exceptions import Web3Exception

from contracts import eip712
from contracts.bindings import Hearth
from contracts.chain import PendingTx, TxSender
from contracts.errors import ChainError
from contracts.types import JobRequest, Permit
from gateway import store
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
        """The client's next JobRequest nonce, counting relays broadcast and not mined yet (the
        pending block), so a client may send its next request before the previous is mined."""
        return int(self.call(lambda: self.hearth.market.functions.nonces(client).call(block_identifier="pending")))

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

    def relay(self, req: JobRequest, signature: bytes, permit: Permit | None) -> PendingTx:
        """Broadcasts ``postJobWithSig`` and returns at once (a revert the estimate finds raises
        the matching API error and sends nothing); :class:`RelayTracker` waits for the outcome."""
        key = self.relayer_key()
        h = self.hearth
        fn = h.market.functions.postJobWithSig(req.as_tuple(), signature, (permit or Permit()).as_tuple())
        t0 = time.perf_counter()
        pending = self.call(lambda: h.sender(key).submit(fn))
        tx = _hex(pending.tx_hash)
        log.info("job relayed tx %s client %s nonce %d (not mined yet) in %.0f ms", tx, req.client, pending.nonce,
                 1000 * (time.perf_counter() - t0), extra={"tx_hash": tx, "client": req.client})
        return pending

    # ------------------------------------------------------------ API-key jobs (relayer pays)

    def pull(self, wallet: str, amount: int) -> str:
        """``transferFrom(wallet, relayer, amount)`` under the wallet's allowance to the relayer,
        waited for: the post that spends it must not be sent before the tokens are the relayer's."""
        key = self.relayer_key()
        h = self.hearth
        sender = h.sender(key)
        rcpt = self.call(lambda: sender.wait(sender.submit(
            h.usd.functions.transferFrom(wallet, self.relayer_address, amount))))
        return _hex(rcpt["transactionHash"])

    def give_back(self, wallet: str, amount: int) -> str:
        key = self.relayer_key()
        h = self.hearth
        sender = h.sender(key)
        rcpt = self.call(lambda: sender.wait(sender.submit(h.usd.functions.transfer(wallet, amount))))
        return _hex(rcpt["transactionHash"])

    def post_as_relayer(self, model_id: bytes, input_hash: bytes, amount: int, deadline: int) -> PendingTx:
        """Broadcasts ``postJob`` as the relayer and returns at once (see :meth:`relay`)."""
        key = self.relayer_key()
        h = self.hearth
        sender = h.sender(key)
        if not self._market_approved:
            assert self.relayer_address is not None
            if self.allowance(self.relayer_address, self.market) < 2**255:
                self.call(lambda: sender.wait(sender.submit(h.usd.functions.approve(self.market, MAX_UINT256))))
            self._market_approved = True
        pending = self.call(lambda: sender.submit(h.market.functions.postJob(model_id, input_hash, amount, deadline)))
        tx = _hex(pending.tx_hash)
        log.info("job posted for an API key tx %s (not mined yet)", tx, extra={"tx_hash": tx})
        return pending


def _hex(h: bytes) -> str:
    return "0x" + bytes(h).hex()


@dataclass(frozen=True)
class RelayOutcome:
    """How a relayed job's transaction ended (``gw_relays`` holds the same)."""

    tx_hash: str
    status: store.RelayStatus
    job_id: int | None = None
    block_number: int | None = None
    mined_tx: str | None = None
    error: GatewayError | None = None


class RelayTracker:
    """Waits in the background for the transactions the gateway relayed and records each one's
    outcome in ``gw_relays``, so the 202 answer can name a transaction that a client polls at
    ``GET /v1/relays/{tx_hash}``. Waiting happens on a pool of its own, outside any request:
    a client that disconnects, or a handler that gives up, changes nothing about the
    bookkeeping. ``on_done`` runs once with the outcome (returning an API key's pull when its
    post did not go through, dropping an input blob stored for a job that was never posted).

    A relay still pending after a restart (its waiter died with the process) is settled from
    its receipt when it is read, see :meth:`refresh`."""

    def __init__(self, chain: ChainAccess, db: Engine, workers: int = 32) -> None:
        self.chain = chain
        self.db = db
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="relay-wait")
        self._live: dict[str, Future[RelayOutcome]] = {}
        self._guard = threading.Lock()

    def track(self, pending: PendingTx, *, kind: str, client: str, charge_id: int | None = None,
              on_done: Callable[[RelayOutcome], None] | None = None) -> Future[RelayOutcome]:
        tx = _hex(pending.tx_hash)
        store.add_relay(self.db, tx, kind, client, store.now(), charge_id)
        sender = self.chain.hearth.sender(self.chain.relayer_key())
        fut = self._pool.submit(self._wait, sender, pending, tx, on_done)
        with self._guard:
            self._live[tx] = fut
        fut.add_done_callback(lambda _f: self._forget(tx))
        return fut

    def _forget(self, tx: str) -> None:
        with self._guard:
            self._live.pop(tx, None)

    def _wait(self, sender: TxSender, pending: PendingTx, tx: str,
              on_done: Callable[[RelayOutcome], None] | None) -> RelayOutcome:
        try:
            rcpt = sender.wait(pending)
            job_id = self.chain.hearth.job_id_from(rcpt)
            block = int(rcpt["blockNumber"])
            mined = _hex(rcpt["transactionHash"])
            store.finish_relay(self.db, tx, store.RelayStatus.MINED, store.now(), job_id=job_id,
                               block_number=block, mined_tx=mined)
            log.info("job %d relayed tx %s mined in block %d", job_id, mined, block,
                     extra={"job_id": job_id, "tx_hash": mined, "block": block})
            outcome = RelayOutcome(tx, store.RelayStatus.MINED, job_id, block, mined)
        except ChainError as exc:
            outcome = self._failed(tx, map_chain_error(exc), store.RelayStatus.REVERTED if "reverted" in str(exc)
                                   else store.RelayStatus.FAILED)
        except Exception as exc:  # noqa: BLE001 - an RPC failure while waiting: recorded, never raised here
            outcome = self._failed(tx, UpstreamError(f"waiting for {tx} failed: {exc}"), store.RelayStatus.FAILED)
        if on_done is not None:
            try:
                on_done(outcome)
            except Exception:  # noqa: BLE001 - logged; the relay's record stands
                log.exception("after relay %s: follow-up failed", tx, extra={"tx_hash": tx})
        return outcome

    def _failed(self, tx: str, err: GatewayError, status: store.RelayStatus) -> RelayOutcome:
        store.finish_relay(self.db, tx, status, store.now(), reason=err.reason[:64],
                           revert=(err.extra.get("revert") or None), message=err.message[:2000])
        log.warning("relayed tx %s %s: %s", tx, status.value, err.message, extra={"tx_hash": tx})
        return RelayOutcome(tx, status, error=err)

    def refresh(self, tx: str) -> store.Relay | None:
        """The relay's record; one left pending by a process that is gone is settled from the
        chain's receipt (a revert is then recorded without the contract's reason)."""
        row = store.get_relay(self.db, tx)
        if row is None or row.status != store.RelayStatus.PENDING:
            return row
        with self._guard:
            if row.tx_hash in self._live:
                return row
        try:
            rcpt = self.chain.w3.eth.get_transaction_receipt(HexBytes(row.tx_hash))
        except Exception:  # noqa: BLE001 - unknown or not mined yet: still pending
            return row
        if rcpt["status"] == 1:
            try:
                job_id: int | None = self.chain.hearth.job_id_from(rcpt)
            except ChainError:  # mined but posted no job: not a job relay after all
                job_id = None
            return store.finish_relay(self.db, row.tx_hash, store.RelayStatus.MINED, store.now(), job_id=job_id,
                                      block_number=int(rcpt["blockNumber"]), mined_tx=row.tx_hash) or row
        return store.finish_relay(self.db, row.tx_hash, store.RelayStatus.REVERTED, store.now(), reason="reverted",
                                  message=f"transaction {row.tx_hash} reverted in block {rcpt['blockNumber']}") or row

    def close(self, timeout: float = 30) -> None:
        """Waits (up to ``timeout``) for the relays in flight to settle, so their outcomes and
        follow-ups are recorded before the process stops; one still pending after that is
        settled from its receipt when next read (:meth:`refresh`)."""
        with self._guard:
            live = list(self._live.values())
        futures_wait(live, timeout=timeout)
