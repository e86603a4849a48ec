"""Protocol actions and chain surgery for the indexer tests (real contracts, real Anvil)."""

from __future__ import annotations

import secrets
from typing import Any

from contracts.bindings import Hearth, vote_commitment
from contracts.types import Receipt, gpu_class_bytes

HST = 10**18


class AnvilStateLost(Exception):
    """Anvil 1.7 occasionally rewinds (anvil_rollback / anvil_reorg) onto an empty EVM state:
    blocks, receipts and logs stay intact, but contract code and storage read as empty until the
    next evm_revert. Seen with and without snapshots (about one rewind in a thousand in long
    random runs). The index, built from logs, is unaffected; only further protocol actions and
    the state oracle are impossible."""


class ReorgChain:
    """RPC helpers: mining, time travel, snapshots and the three ways Anvil rewrites history."""

    def __init__(self, hearth: Hearth) -> None:
        self.h = hearth
        self.w3 = hearth.w3
        self.state_lost = False

    def state_ok(self) -> bool:
        return len(self.w3.eth.get_code(self.h.market.address)) > 0

    def _after_rewind(self) -> None:
        self.resync()
        if not self.state_ok():
            self.state_lost = True

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        resp = self.w3.provider.make_request(method, params or [])  # type: ignore[arg-type]
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")
        return resp.get("result")

    def resync(self) -> None:
        for s in self.h._senders.values():
            s.resync()

    @property
    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def advance(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", [seconds])
        self.mine()

    def timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snap: str) -> None:
        assert self.rpc("evm_revert", [snap]) is True
        self.resync()
        self.state_lost = not self.state_ok()

    def raw_tx(self, tx_hash: str) -> str:
        return str(self.rpc("eth_getRawTransactionByHash", ["0x" + tx_hash.removeprefix("0x")]))

    def block_txs(self, first: int, last: int) -> list[str]:
        """Hashes of the transactions in blocks first..last, in order."""
        out: list[str] = []
        for n in range(first, last + 1):
            for tx in self.w3.eth.get_block(n)["transactions"]:
                out.append("0x" + bytes(tx).hex())  # type: ignore[arg-type]
        return out

    def reorg(self, depth: int, txs: list[tuple[str, int]] | None = None) -> None:
        """``anvil_reorg``: replaces the last ``depth`` blocks by as many new ones; ``txs`` are
        (raw signed tx, block offset from the common ancestor) pairs to put in them."""
        self.rpc("anvil_reorg", [depth, [[raw, off] for raw, off in (txs or [])]])
        self._after_rewind()

    def rollback(self, depth: int) -> None:
        """``anvil_rollback``: drops the last ``depth`` blocks (the chain gets shorter)."""
        self.rpc("anvil_rollback", [depth])
        self._after_rewind()


class Protocol:
    """Hearth protocol actions by devnet role."""

    def __init__(self, devnet: Any, chain: ReorgChain) -> None:
        self.dn = devnet
        self.h: Hearth = devnet.hearth
        self.chain = chain
        self.acc = devnet.accounts
        self.model_id = bytes.fromhex(devnet.manifest.models[0].model_id[2:])
        self.runtime = bytes.fromhex(devnet.manifest.models[0].runtime_hash[2:])
        self._approved: set[str] = set()

    def key(self, role: str) -> str:
        return str(self.acc[role].key)

    def address(self, role: str) -> str:
        return str(self.acc[role].address)

    def guard(self) -> None:
        """Protocol actions need the EVM state; see :class:`AnvilStateLost`."""
        if self.chain.state_lost:
            raise AnvilStateLost("Anvil lost the EVM state on a rewind (anvil quirk)")

    def send(self, role: str, fn: Any) -> Any:
        self.guard()
        return self.h.sender(self.key(role)).send(fn)

    def approve(self, role: str) -> None:
        self.h.approve_usd(self.key(role), 10**15)

    def post(self, client: str = "client", max_payment: int = 10_000, deadline_in: int = 86_400,
             input_hash: bytes | None = None) -> tuple[int, Any]:
        self.guard()
        if client not in self._approved or self.h.usd.functions.allowance(
                self.address(client), self.h.market.address).call() < max_payment:
            self.approve(client)
            self._approved.add(client)
        return self.h.post_job(self.key(client), self.model_id, input_hash or secrets.token_bytes(32),
                               max_payment, self.chain.timestamp() + deadline_in)

    def claim(self, job_id: int, provider: str = "provider") -> Any:
        self.guard()
        return self.h.claim(self.key(provider), job_id)

    def deliver(self, job_id: int, provider: str = "provider", units: int = 100,
                output: bytes = b"\x02" * 32) -> Any:
        self.guard()
        r = Receipt(job_id, output, units, self.model_id, self.runtime, gpu_class_bytes("cpu"))
        sig = self.h.sign_receipt(self.key(provider), r)
        return self.h.submit_receipt(self.key("relayer"), r, sig)

    def finalize(self, job_id: int) -> Any:
        self.guard()
        return self.h.finalize(self.key("relayer"), job_id)

    def refund(self, job_id: int) -> Any:
        self.guard()
        return self.h.refund(self.key("relayer"), job_id)

    def challenge(self, job_id: int, verifier: str = "verifier") -> Any:
        self.guard()
        self.approve(verifier)
        return self.h.challenge(self.key(verifier), job_id)

    def committee(self, job_id: int) -> list[str]:
        return list(self.h.market.functions.committee(job_id).call())

    def role_of(self, address: str) -> str:
        return str(next(r for r, a in self.acc.items() if a.address == address))

    def dispute(self, job_id: int, provider_right: bool, receipt_output: bytes = b"\x02" * 32) -> None:
        """Challenge by the verifier, the draw (from a later block), committee votes on
        (output, units), resolution (the job was delivered)."""
        self.challenge(job_id)
        draw_block = int(self.h.dispute(job_id)["drawBlock"])
        self.chain.mine(max(1, draw_block + 1 - self.h.w3.eth.block_number))
        self.send("relayer", self.h.market.functions.drawCommittee(job_id))
        members = list(dict.fromkeys(self.role_of(a) for a in self.committee(job_id)))
        units = int(self.h.dispute(job_id)["units"])
        votes = {}
        for m in members:
            out = receipt_output if provider_right else b"\x09" * 32
            salt = secrets.token_bytes(32)
            votes[m] = (out, salt)
            c = vote_commitment(job_id, self.address(m), out, units, salt)
            self.send(m, self.h.market.functions.commitVote(job_id, c))
        self.chain.advance(301)
        for m, (out, salt) in votes.items():
            self.send(m, self.h.market.functions.revealVote(job_id, out, units, salt))
        self.chain.advance(301)
        self.h.resolve_dispute(self.key("relayer"), job_id)

    def withdraw(self, role: str) -> Any:
        self.guard()
        return self.h.withdraw(self.key(role))

    def stake(self, role: str, amount: int = 5 * HST) -> Any:
        self.send(role, self.h.hst.functions.approve(self.h.staking.address, amount))
        return self.send(role, self.h.staking.functions.stake(amount))

    def unbond(self, role: str, amount: int = HST) -> Any:
        return self.send(role, self.h.staking.functions.requestUnbond(amount))

    def set_serving(self, role: str, serving: bool) -> Any:
        return self.send(role, self.h.staking.functions.setServing(self.model_id, serving))

    def update_provider(self, role: str, endpoint: str) -> Any:
        return self.send(role, self.h.staking.functions.updateProvider(endpoint, "eu", "h100"))
