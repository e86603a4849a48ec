"""Talking to the chain: connections, custom-error decoding and a transaction sender with
many transactions in flight per key, nonce management, retries and fee bumping."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import TxParams, TxReceipt

from contracts.errors import ChainError, RevertContext, explain_revert

log = logging.getLogger(__name__)


def connect(rpc_url: str, timeout: float = 30) -> Web3:
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    return w3


class ErrorDecoder:
    """Maps revert data to the custom error it encodes, using every custom error in the given
    ABIs, and explains it as a sentence (``contracts.errors.explain_revert``).

    ``contracts`` names the contracts by address (manifest names), so an explanation can say in
    which token an amount is."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]], contracts: dict[str, str] | None = None) -> None:
        self._errors: dict[bytes, tuple[str, list[str], tuple[str, ...]]] = {}
        self._contracts = {a.lower(): n for a, n in (contracts or {}).items()}
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = [_abi_type(i) for i in item["inputs"]]
                sig = f"{item['name']}({','.join(types)})"
                self._errors[keccak(text=sig)[:4]] = (item["name"], types,
                                                      tuple(str(i.get("name", "")) for i in item["inputs"]))

    def decode(self, data: bytes | str | None) -> tuple[str, tuple[Any, ...]] | None:
        found = self._decode(data)
        return (found[0], found[1]) if found else None

    def _decode(self, data: bytes | str | None) -> tuple[str, tuple[Any, ...], tuple[str, ...]] | None:
        if data is None:
            return None
        try:
            raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(data, str) else data
        except ValueError:
            return None
        if len(raw) < 4 or raw[:4] not in self._errors:
            return None
        name, types, names = self._errors[raw[:4]]
        try:
            values = abi_decode(types, raw[4:])
        except Exception:  # noqa: BLE001 - malformed data: report the name alone
            return name, (), ()
        return name, tuple(to_checksum_address(v) if t == "address" else v
                           for t, v in zip(types, values, strict=True)), names

    def context(self, fn: ContractFunction | ContractConstructor | None, sender: str | None = None,
                arg_names: tuple[str, ...] = ()) -> RevertContext:
        action = getattr(fn, "fn_name", None) if fn is not None else None
        address = getattr(fn, "address", None) if fn is not None else None
        contract = self._contracts.get(str(address).lower()) if address else None
        return RevertContext(action=action, contract=contract, sender=sender, arg_names=arg_names)

    def from_exception(self, exc: Exception, fn: ContractFunction | ContractConstructor | None = None,
                       sender: str | None = None) -> ChainError:
        """The ``ChainError`` for a failed call or estimate: a decoded custom error explained as a
        sentence, a revert without data said as such, anything else with the node's message."""
        data: Any = getattr(exc, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if data is None and exc.args:
            a = exc.args[-1] if isinstance(exc.args[-1], str) else None
            data = a if a and a.startswith("0x") else None
        decoded = self._decode(data) if isinstance(data, (str, bytes)) else None
        action = getattr(fn, "fn_name", None) if fn is not None else None
        if decoded:
            name, args, names = decoded
            ctx = self.context(fn, sender, names)
            return ChainError(explain_revert(name, args, ctx), name, args, action=action)
        text = str(exc)
        if "revert" in text.lower():
            doing = f"`{action}`" if action else "the call"
            reason = _revert_reason(text)
            if reason:
                return ChainError(f"the contract refused {doing}: {reason}", action=action)
            return ChainError(f"the contract refused {doing} without giving a reason (a revert with no error data: "
                              f"the function may not exist on this contract, or a token refused a transfer)",
                              action=action)
        return ChainError(text, action=action)


def _revert_reason(text: str) -> str | None:
    """A revert string from a node message (``execution reverted: reason``), if it carries one."""
    m = re.search(r"reverted:?\s*(?:reason string\s*)?'?([^'\n]+?)'?\s*$", text.strip("'\"()"))
    if not m:
        return None
    reason = m.group(1).strip()
    return reason if reason and not reason.startswith("0x") and reason.lower() != "execution reverted" else None


def _abi_type(inp: dict[str, Any]) -> str:
    if inp["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in inp["components"])
        return f"({inner}){inp['type'][5:]}"
    return str(inp["type"])


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return str(v)


@dataclass
class PendingTx:
    """A transaction broadcast for one nonce; every fee bump adds a hash (newest last), and
    whichever of them is mined settles it."""

    nonce: int
    hashes: list[HexBytes]
    params: dict[str, Any]
    """The last transaction sent for this nonce, unsigned (rebuilt with higher fees on a bump)."""
    fn: ContractFunction | ContractConstructor
    """The call, replayed to explain a revert."""
    sent_at: float = field(default_factory=time.monotonic)

    @property
    def tx_hash(self) -> HexBytes:
        return self.hashes[-1]


class TxSender:
    """Sends transactions for one key with many in flight at once.

    ``submit`` estimates, assigns the next nonce, signs and broadcasts under the lock and returns
    at once; ``wait`` polls for whichever broadcast of that nonce is mined, outside the lock, so
    other threads keep sending meanwhile. A transaction not mined within ``receipt_timeout`` is
    replaced with the same nonce and fees at least 12.5% higher (``max_bumps`` times), and one the
    node no longer knows (dropped by a reorg or a node restart) is broadcast again. After a
    process restart, or when the node's pending count fell behind the local nonce with nothing of
this sender in flight at that nonce (a reorganisation dropped mined transactions), the next
nonce comes from the node's pending count. Estimates run against
    the pending block, so a transaction may depend on earlier ones that are not mined yet.
    Thread-safe; one instance per key per process."""

    def __init__(
        self, w3: Web3, key: str | bytes, decoder: ErrorDecoder, *,
        receipt_timeout: float = 30, max_bumps: int = 3, poll: float = 0.05,
    ) -> None:
        self.w3 = w3
        self.account: LocalAccount = Account.from_key(key)
        self.address = self.account.address
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self.max_bumps = max_bumps
        self.poll = poll
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._pending: dict[int, PendingTx] = {}
        self._chain_id: int | None = None

    def _next_nonce(self) -> int:
        chain = self.w3.eth.get_transaction_count(self.address, "pending")
        if self._nonce is None or self._nonce < chain:
            self._nonce = chain
        elif self._nonce > chain and chain not in self._pending:
            # Nonces this sender used were mined and then dropped by a reorganisation (or the
            # node forgot them): what is sent next would wait behind the gap for ever.
            log.warning("nonce of %s back from %d to %d (reorganisation?)", self.address, self._nonce, chain)
            self._nonce = chain
        return self._nonce

    def resync(self) -> None:
        """Forgets the local nonce and what is in flight (after the chain was reset or rewound)."""
        with self._lock:
            self._nonce = None
            self._pending.clear()

    @property
    def in_flight(self) -> int:
        """Transactions broadcast and not yet seen mined."""
        with self._lock:
            return len(self._pending)

    def estimate(self, fn: ContractFunction | ContractConstructor, value: int = 0) -> int:
        try:
            return int(fn.estimate_gas(cast(TxParams, {"from": self.address, "value": value}), "pending"))
        except (ContractCustomError, ContractLogicError, Web3RPCError, ValueError) as exc:
            raise self.decoder.from_exception(exc, fn, self.address) from None

    def send(
        self, fn: ContractFunction | ContractConstructor, *, gas: int | None = None, value: int = 0, wait: bool = True
    ) -> TxReceipt:
        """Sends ``fn`` and (by default) waits for its receipt; raises ``ChainError`` on revert."""
        pending = self.submit(fn, gas=gas, value=value)
        if not wait:
            return {"transactionHash": pending.tx_hash}  # type: ignore[typeddict-item]
        return self.wait(pending)

    def submit(
        self, fn: ContractFunction | ContractConstructor, *, gas: int | None = None, value: int = 0,
    ) -> PendingTx:
        """Broadcasts ``fn`` with the next nonce and returns without waiting for it to be mined.
        A revert found by the estimate raises ``ChainError`` and uses no nonce."""
        with self._lock:
            gas = gas or int(self.estimate(fn, value) * 1.2) + 10_000
            if self._chain_id is None:
                self._chain_id = int(self.w3.eth.chain_id)
            tip = int(self.w3.to_wei(1, "gwei"))
            base = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
            base_params: dict[str, Any] = {
                "from": self.address, "gas": gas, "value": value, "maxFeePerGas": base * 2 + tip,
                "maxPriorityFeePerGas": tip, "chainId": self._chain_id,
            }
            for _ in range(3):
                nonce = self._next_nonce()
                params = dict(fn.build_transaction(cast(TxParams, {**base_params, "nonce": nonce})))
                try:
                    tx_hash = self._broadcast(params, fn)
                except _NonceTaken:
                    self._nonce = None  # another process used it: ask the node again
                    continue
                self._nonce = nonce + 1
                pending = PendingTx(nonce, [tx_hash], params, fn)
                self._pending[nonce] = pending
                log.debug("tx %s sent nonce %d from %s", tx_hash.hex(), nonce, self.address)
                return pending
            raise ChainError(f"could not find a free nonce for {self.address}")

    def wait(self, pending: PendingTx, timeout: float | None = None) -> TxReceipt:
        """Waits until a broadcast of ``pending`` is mined (bumping fees when it is slow) and
        returns its receipt; raises ``ChainError`` when it reverted or was never mined."""
        per_try = self.receipt_timeout if timeout is None else timeout
        for attempt in range(self.max_bumps + 1):
            deadline = time.monotonic() + per_try
            while time.monotonic() < deadline:
                rcpt = self._mined(pending)
                if rcpt is not None:
                    return self._settled(pending, rcpt)
                time.sleep(self.poll)
            if attempt < self.max_bumps:
                self._bump(pending, attempt)
        with self._lock:
            self._pending.pop(pending.nonce, None)
        raise ChainError(f"transaction {pending.tx_hash.hex()} (nonce {pending.nonce}) not mined after "
                         f"{self.max_bumps} fee bumps")

    def _mined(self, pending: PendingTx) -> TxReceipt | None:
        for h in reversed(pending.hashes):
            try:
                return self.w3.eth.get_transaction_receipt(h)
            except TransactionNotFound:
                continue
        return None

    def _settled(self, pending: PendingTx, rcpt: TxReceipt) -> TxReceipt:
        with self._lock:
            self._pending.pop(pending.nonce, None)
        if rcpt["status"] != 1:
            raise self._why_reverted(pending.fn, int(pending.params.get("value", 0)), int(pending.params["gas"]), rcpt)
        log.debug("tx %s mined in block %s gas %s", rcpt["transactionHash"].hex(),
                  rcpt["blockNumber"], rcpt["gasUsed"])
        return rcpt

    def _bump(self, pending: PendingTx, attempt: int) -> None:
        """Replaces a slow transaction with the same nonce and higher fees, or broadcasts it again
        when the node has forgotten it."""
        with self._lock:
            known = any(self._known(h) for h in pending.hashes)
            params = dict(pending.params)
            if known:
                params["maxPriorityFeePerGas"] = params["maxPriorityFeePerGas"] * 9 // 8 + 1
                params["maxFeePerGas"] = params["maxFeePerGas"] * 9 // 8 + 1
            try:
                tx_hash = self._broadcast(params, pending.fn)
            except _NonceTaken:
                return  # one of our broadcasts was mined meanwhile; the next poll finds it
            pending.params = params
            if tx_hash not in pending.hashes:
                pending.hashes.append(tx_hash)
            log.warning("tx %s (nonce %d) not mined after %.0fs; %s (attempt %d)", tx_hash.hex(), pending.nonce,
                        self.receipt_timeout, "bumped fees" if known else "sent again", attempt + 1)

    def _why_reverted(self, fn: ContractFunction | ContractConstructor, value: int, gas: int,
                      rcpt: TxReceipt) -> ChainError:
        """A mined transaction reverted although its gas estimate passed: the state changed in
        between (another party acted first) or it ran out of gas. Receipts carry no revert data,
        so the call is replayed on the state of its block to find the contract's reason."""
        tx = "0x" + bytes(rcpt["transactionHash"]).hex().removeprefix("0x")
        action = getattr(fn, "fn_name", None)
        doing = f"`{action}`" if action else "it"
        where = f"transaction {tx} was mined in block {rcpt['blockNumber']} but reverted"
        if int(rcpt["gasUsed"]) >= gas:
            return ChainError(f"{where}: it ran out of gas ({gas} given)", action=action)
        try:
            if isinstance(fn, ContractFunction):
                fn.call(cast(TxParams, {"from": self.address, "value": value}), block_identifier=rcpt["blockNumber"])
        except (ContractCustomError, ContractLogicError, Web3RPCError, ValueError) as exc:
            err = self.decoder.from_exception(exc, fn, self.address)
            if err.error_name:
                return ChainError(f"{where} (the chain changed after it was checked): {err}", err.error_name,
                                  err.error_args, action=action)
        except Exception:  # noqa: BLE001 - the replay is best effort: the node may not serve old state
            log.debug("could not replay reverted tx %s", tx, exc_info=True)
        return ChainError(f"{where} without a reason: the chain's state changed between the check and the "
                          f"inclusion (another party acted first?); check the current state and retry {doing}",
                          action=action)

    def lost(self, pending: PendingTx) -> bool:
        """Whether the node knows none of ``pending``'s broadcasts (a reorganisation dropped it
        after it was mined, or the node forgot it): then it is forgotten here too, and the caller
        may send the call again."""
        if self._mined(pending) is not None or any(self._known(h) for h in pending.hashes):
            return False
        with self._lock:
            self._pending.pop(pending.nonce, None)
        return True

    def _known(self, tx_hash: HexBytes) -> bool:
        try:
            self.w3.eth.get_transaction(tx_hash)
            return True
        except TransactionNotFound:
            return False

    def _broadcast(self, params: dict[str, Any], fn: ContractFunction | ContractConstructor) -> HexBytes:
        signed = self.account.sign_transaction(params)
        try:
            return HexBytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        except Web3RPCError as exc:
            msg = str(exc).lower()
            if "already known" in msg:
                return HexBytes(signed.hash)
            if "nonce too low" in msg:
                raise _NonceTaken from None
            raise self.decoder.from_exception(exc, fn, self.address) from None


class _NonceTaken(Exception):
    """The node says the nonce is used already."""


def wait_for_rpc(w3: Web3, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            _ = w3.eth.block_number
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise ChainError(f"no RPC answering at {w3.provider.endpoint_uri} after {timeout}s")  # type: ignore[attr-defined]
