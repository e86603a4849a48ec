"""The verifier duty on committed batches: ``python -m worker.serving.verifier``.

A staked provider that serves the model (the contract lets only such an account challenge a
leaf) runs this next to, or instead of, its endpoint. Each tick it:

1. **watches** ``BatchCommitted`` (other providers' batches), ``LeafChallenged`` and
   ``CommitteeDrawn`` of ``BatchSettlement``, recording them in its state file;
2. **samples** each batch once the block after its commit block exists: leaf ``i`` is checked
   when it is among the ``max(min_samples, ceil(count x sample_rate_bps / 10000))`` indices of
   lowest ``keccak256(seed ++ uint256(i))``, with ``seed = keccak256(secret ++ blockhash(commit
   block + 1) ++ uint256(batchId))`` and ``secret`` derived from the verifier's key, never
   published. The provider cannot know that block hash when it commits, nor any verifier's
   draw afterwards (as in the per-job verifier of ``worker.node``);
3. **fetches** the batch's leaves and proofs from the provider's registered endpoint
   (``GET /v1/serving/batches/{id}/leaves``), checks the published batch and each sampled
   leaf's Merkle proof against the chain, and the leaf's input blob from the blob store (a
   gateway keeps them for the challenge window). A sampled leaf still not published with a valid
   proof ``demand_after_s`` after the commit is demanded on-chain (``demandLeaf``): a revealed
   leaf is checked like a published one; one not revealed by its deadline is settled as withheld
   (``settleWithheldLeaf``: fraud);
4. **re-executes** each sampled leaf whose runtime and numerics class are this verifier's (the
   ``Workload`` interface; anything else is ``incomparable``: no bitwise check is possible) and
   compares output hash and units. A generation leaf (SmolLM2) is re-executed as one
   teacher-forced prefill of prompt + claimed output (the output blob, kept by the gateway like
   the input): the tokens re-sampled with the request's seed at every position must be the
   claimed ones, and the finish reason must follow from them; when they are not, the request is
   decoded to name the output this runtime gives. SmolLM2 is loaded only when the first
   generation leaf is checked (or the endpoint's own weights are used);
5. **challenges** a mismatch with the leaf and its proof (``challengeLeaf``, bond in the payment
   token), then drives the dispute to its end: draws the committee once its draw block is past,
   resolves after the reveal phase (or after the escalation deadline), withdraws its reward;
6. serves on **leaf committees** it is drawn for: re-executes the disputed leaf (read from the
   challenge transaction's calldata) as in 4 and commits, then reveals, its (output hash, units).

State: one SQLite file per (chain, settlement, verifier), schema versioned by
``PRAGMA user_version``. A leaf is marked ``challenging`` before its challenge is sent and a
vote's salt is stored before its commitment is, so after a restart the chain decides what was
mined and nothing is challenged or committed twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_utils import keccak
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from web3 import Web3

from common.settings import BlobStoreSettings, HearthSettings
from contracts import merkle
from contracts.bindings import vote_commitment
from contracts.errors import ChainError
from contracts.logs import chunk
from contracts.serving import work_receipt_from_json, work_receipt_json
from contracts.settlement import Batch, Settlement, WorkReceipt, work_leaf
from contracts.types import Phase

log = logging.getLogger("worker.serving.verifier")

BPS = 10_000
SCHEMA_VERSION = 1
#: The schema, one list of statements per version, each applied once.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE cursors (name TEXT PRIMARY KEY, block INTEGER NOT NULL)",
        """CREATE TABLE batches (
            batch_id INTEGER PRIMARY KEY, provider TEXT NOT NULL, root BLOB NOT NULL, count INTEGER NOT NULL,
            units INTEGER NOT NULL, value TEXT NOT NULL, committed_at INTEGER NOT NULL, block INTEGER NOT NULL,
            status TEXT NOT NULL, note TEXT)""",
        """CREATE TABLE leaves (
            batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, verdict TEXT NOT NULL, receipt TEXT, proof TEXT,
            note TEXT, challenge_tx TEXT, PRIMARY KEY (batch_id, idx))""",
        """CREATE TABLE disputes (
            batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, challenger INTEGER NOT NULL DEFAULT 0,
            seats INTEGER NOT NULL DEFAULT 0, commit_end INTEGER NOT NULL DEFAULT 0,
            reveal_end INTEGER NOT NULL DEFAULT 0, vote TEXT NOT NULL DEFAULT 'none', output_hash BLOB,
            units INTEGER, salt BLOB, resolved INTEGER NOT NULL DEFAULT 0, outcome TEXT,
            PRIMARY KEY (batch_id, idx))""",
    ],
]

#: Batch statuses: ``pending`` (sampling block not there yet), ``sampled`` (leaves to check),
#: ``done`` (every sampled leaf has a verdict), ``expired`` (its window closed first).
#: Leaf verdicts: ``pending``, ``match``, ``mismatch``, ``challenging``, ``challenged``,
#: ``incomparable``, ``uncheckable``, ``moot`` (someone else disputed it), ``expired``.


class VerifierError(RuntimeError):
    """A state file of another schema version or verifier, or a verifier that cannot run."""


class VerifierSettings(HearthSettings, BlobStoreSettings):
    """``HEARTH_VERIFIER_*``; ``HEARTH_DATA_DIR``, ``HEARTH_MANIFEST`` and ``HEARTH_LOG_LEVEL`` are
    shared. Blobs come from ``HEARTH_VERIFIER_BLOB_URL`` (a gateway) or the other blob stores."""

    model_config = SettingsConfigDict(env_prefix="HEARTH_VERIFIER_", extra="ignore", populate_by_name=True)

    key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HEARTH_VERIFIER_KEY",
                                                                             "HEARTH_WORKER_KEY", "key"))
    """The verifier's key: a staked provider that serves the model."""
    devnet_role: str | None = None
    """On a devnet: take the key of this role from the accounts file."""
    state_path: Path | None = None
    """Default ``<data_dir>/verifier-<chain>-<settlement>-<address>.sqlite``."""
    sample_rate_bps: int = Field(default=1000, ge=0, le=BPS)
    """Share of each batch's leaves re-executed (basis points)."""
    min_samples: int = Field(default=1, ge=0)
    """At least this many leaves of every batch (fewer when the batch is smaller)."""
    poll_s: float = Field(default=1.0, gt=0)
    confirmations: int = Field(default=0, ge=0)
    """Events are read this many blocks behind the head (reorg safety on a real chain)."""
    demand_after_s: int = Field(default=120, ge=0)
    """A sampled leaf not published with a valid proof this long (chain seconds) after its batch's
    commit is demanded on-chain (``demandLeaf``); not revealed in time, it is fraud."""
    min_withdraw: int = 1
    """Withdraw payment-token credits once they reach this (wei); staking rewards always."""
    backend: str = "torch"
    dtype: str = "fp32"
    device: str | None = None
    gpu_class: str = "cpu"
    """This verifier's numerics class: only leaves of this class (and runtime) are compared."""
    http_timeout_s: float = 30.0


class Checker:
    """What this verifier can re-execute: a workload, its runtime hash and numerics class. The
    workload may be given as ``load`` instead, called once, when the first leaf it checks comes
    (SmolLM2's weights are loaded only by a verifier that samples, or judges, a generation leaf)."""

    def __init__(self, workload: Any, runtime_hash: bytes, numerics_class: bytes, *,
                 load: Callable[[], Any] | None = None) -> None:
        if workload is None and load is None:
            raise VerifierError("a checker needs a workload or a way to load one")
        self._workload, self._load = workload, load
        self.runtime_hash, self.numerics_class = runtime_hash, numerics_class
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._workload is not None

    @property
    def workload(self) -> Any:
        if self._workload is None:
            with self._lock:
                if self._workload is None:
                    assert self._load is not None
                    self._workload = self._load()
        return self._workload


@dataclass
class TickReport:
    sampled: list[tuple[int, int]]
    matched: list[tuple[int, int]]
    mismatched: list[tuple[int, int]]
    challenged: list[tuple[int, int]]
    voted: list[tuple[int, int]]
    resolved: list[tuple[int, int]]

    @classmethod
    def empty(cls) -> TickReport:
        return cls([], [], [], [], [], [])


class VerifierState:
    """The verifier's SQLite file (see the module docstring)."""

    def __init__(self, path: Path, verifier: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        if fresh:
            os.chmod(path, 0o600)  # holds unrevealed vote salts
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._lock = threading.RLock()
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise VerifierError(f"{path} has schema version {version}; this verifier reads up to {len(MIGRATIONS)}")
        for v in range(version, len(MIGRATIONS)):
            with self.tx() as c:
                for stmt in MIGRATIONS[v]:
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version={v + 1}")
        with self.tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS owner (address TEXT NOT NULL)")
            row = c.execute("SELECT address FROM owner").fetchone()
            if row is None:
                c.execute("INSERT INTO owner VALUES (?)", (verifier.lower(),))
            elif str(row[0]) != verifier.lower():
                raise VerifierError(f"{path} is the state of verifier {row[0]}, not {verifier}")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    def x(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with self.tx() as c:
            c.execute(sql, args)

    def cursor(self, name: str, default: int) -> int:
        rows = self.q("SELECT block FROM cursors WHERE name=?", (name,))
        return int(rows[0][0]) if rows else default

    def set_cursor(self, name: str, block: int) -> None:
        self.x("INSERT INTO cursors VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET block=excluded.block", (name, block))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def state_path(data_dir: Path, chain_id: int, settlement: str, address: str) -> Path:
    return data_dir / f"verifier-{chain_id}-{settlement.lower()[2:10]}-{address.lower()[2:10]}.sqlite"


def sample_indices(seed: bytes, count: int, rate_bps: int, min_samples: int) -> list[int]:
    """The leaves of a batch of ``count`` a verifier with ``seed`` checks (see the module docstring)."""
    n = min(count, max(min_samples, math.ceil(count * rate_bps / BPS)))
    order = sorted(range(count), key=lambda i: keccak(seed + i.to_bytes(32, "big")))
    return sorted(order[:n])


def _receipt(raw: Any) -> WorkReceipt:
    """A ``WorkReceipt`` from decoded calldata (a tuple, or a dict keyed by field name)."""
    if isinstance(raw, dict):
        raw = [raw[k] for k in ("requestId", "payer", "modelId", "inputHash", "outputHash", "units", "value",
                                "runtimeHash", "numericsClass")]
    r = list(raw)
    return WorkReceipt(bytes(r[0]), str(r[1]), bytes(r[2]), bytes(r[3]), bytes(r[4]), int(r[5]), int(r[6]),
                       bytes(r[7]), bytes(r[8]))


def _batch_of(row: tuple[Any, ...]) -> Batch:
    _, provider, root, count, units, value, committed_at = row[:7]
    return Batch(str(provider), bytes(root), int(count), int(units), int(str(value)), int(committed_at))


class BatchVerifier:
    #: blocks per ``eth_getLogs`` call: public RPC endpoints refuse wider ranges (10,000 is a
    #: common cap), and a verifier back from a long stop catches up chunk by chunk
    log_chunk_blocks = 2_000

    def __init__(self, settlement: Settlement, key: str, checkers: dict[bytes, Checker], blobs: Any,
                 state: VerifierState, *, sample_rate_bps: int = 1000, min_samples: int = 1, confirmations: int = 0,
                 demand_after_s: int = 120, min_withdraw: int = 1, http_timeout_s: float = 30.0) -> None:
        self.s = settlement
        self.h = settlement.h
        self.w3 = settlement.h.w3
        self.key = key
        self.address = str(Account.from_key(key).address)
        self.sender = settlement.h.sender(key)
        self.checkers = checkers
        self.blobs = blobs
        self.state = state
        self.sample_rate_bps = sample_rate_bps
        self.min_samples = min_samples
        self.confirmations = confirmations
        self.demand_after_s = demand_after_s
        self.min_withdraw = min_withdraw
        self.http = httpx.Client(timeout=http_timeout_s)
        self.f = settlement.batches.functions
        self.ev = settlement.batches.events
        self.start_block = int(getattr(self.h.manifest, "deployment_block", 0) or 0)
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def sampling_secret(self) -> bytes:
        """A per-verifier secret for sampling, derived from its key (never published)."""
        return keccak(b"hearth batch verifier sampling" + bytes.fromhex(self.key.removeprefix("0x")))

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.tick()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - the RPC or a peer may blink; next tick retries
                self.error = exc
                log.warning("verifier tick failed: %s", exc, exc_info=True)
            stop.wait(poll_s)

    def start(self, stop: threading.Event, poll_s: float = 1.0) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, args=(stop, poll_s), name="batch-verifier", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Closes the state file and HTTP client; a started duty thread is joined first (set its
        stop event before)."""
        if self._thread is not None:
            self._thread.join(30)
        self.http.close()
        self.state.close()

    def tick(self) -> TickReport:
        rep = TickReport.empty()
        head = int(self.w3.eth.block_number)
        now = int(self.w3.eth.get_block(head)["timestamp"])
        safe = head - self.confirmations
        self._watch(safe)
        self._sample(head, now, rep)
        self._check(now, rep)
        self._demand(now, rep)
        self._challenge(now, rep)
        self._disputes(head, now, rep)
        self._withdraw()
        return rep

    # ------------------------------------------------------------ 1. events
    def _watch(self, safe: int) -> None:
        """Reads the events up to ``safe`` into the state, ``log_chunk_blocks`` blocks at a time
        (each chunk in one transaction with its cursor)."""
        for start, end in chunk(self.state.cursor("events", self.start_block), safe, self.log_chunk_blocks):
            self._watch_range(start, end)

    def _watch_range(self, start: int, safe: int) -> None:
        me = self.address.lower()
        with self.state.tx() as c:
            for lg in self.ev.BatchCommitted().get_logs(from_block=start, to_block=safe):
                a = lg["args"]
                mine = str(a["provider"]).lower() == me
                c.execute("INSERT OR IGNORE INTO batches VALUES (?,?,?,?,?,?,?,?,?,?)",
                          (int(a["batchId"]), str(a["provider"]), bytes(a["root"]), int(a["count"]), int(a["units"]),
                           str(int(a["value"])), int(a["committedAt"]), int(lg["blockNumber"]),
                           "own" if mine else "pending", None))
            for lg in self.ev.LeafChallenged().get_logs(from_block=start, to_block=safe):
                a = lg["args"]
                bid, idx = int(a["batchId"]), int(a["index"])
                if str(a["challenger"]).lower() == me:
                    c.execute("INSERT OR IGNORE INTO disputes (batch_id, idx) VALUES (?, ?)", (bid, idx))
                    c.execute("UPDATE disputes SET challenger=1 WHERE batch_id=? AND idx=?", (bid, idx))
                    c.execute("UPDATE leaves SET verdict='challenged', challenge_tx=? WHERE batch_id=? AND idx=?",
                              ("0x" + bytes(lg["transactionHash"]).hex(), bid, idx))
                else:  # someone else disputes it: our own check of this leaf is moot
                    c.execute("UPDATE leaves SET verdict='moot', note='challenged by another' WHERE batch_id=? "
                              "AND idx=? AND verdict IN ('pending', 'mismatch')", (bid, idx))
            for lg in self.ev.CommitteeDrawn().get_logs(from_block=start, to_block=safe):
                a = lg["args"]
                seats = sum(1 for m in a["seats"] if str(m).lower() == me)
                if not seats:
                    continue
                did = int(a["jobId"])
                bid, idx = did >> 32, did & 0xFFFFFFFF
                c.execute("INSERT OR IGNORE INTO disputes (batch_id, idx) VALUES (?, ?)", (bid, idx))
                c.execute("UPDATE disputes SET seats=?, commit_end=?, reveal_end=?, vote=CASE WHEN vote='none' "
                          "THEN 'pending' ELSE vote END WHERE batch_id=? AND idx=?",
                          (seats, int(a["commitEnd"]), int(a["revealEnd"]), bid, idx))
                log.info("on the committee of leaf %d/%d (%d seats, block %d)", bid, idx, seats, lg["blockNumber"])
            c.execute("INSERT INTO cursors VALUES ('events', ?) ON CONFLICT(name) DO UPDATE SET block=excluded.block",
                      (safe + 1,))

    # ------------------------------------------------------------ 2. sampling
    def _challenge_end(self, committed_at: int) -> int:
        return committed_at + int(self.s.params().challenge_window)

    def _sample(self, head: int, now: int, rep: TickReport) -> None:
        rows = self.state.q("SELECT batch_id, count, committed_at, block FROM batches WHERE status='pending'")
        for bid, count, committed_at, block in rows:
            if now >= self._challenge_end(int(committed_at)):
                self.state.x("UPDATE batches SET status='expired' WHERE batch_id=?", (bid,))
                continue
            if head < int(block) + 1:
                continue  # the block whose hash seeds the sample does not exist yet
            bh = bytes(self.w3.eth.get_block(int(block) + 1)["hash"])
            seed = keccak(self.sampling_secret + bh + int(bid).to_bytes(32, "big"))
            picked = sample_indices(seed, int(count), self.sample_rate_bps, self.min_samples)
            with self.state.tx() as c:
                for i in picked:
                    c.execute("INSERT OR IGNORE INTO leaves (batch_id, idx, verdict) VALUES (?, ?, 'pending')",
                              (bid, i))
                c.execute("UPDATE batches SET status=? WHERE batch_id=?", ("sampled" if picked else "done", bid))
            rep.sampled.extend((int(bid), i) for i in picked)
            log.info("sampled batch %d: leaves %s of %d", bid, picked, count)

    # ------------------------------------------------------------ 3-4. fetch and re-execute
    def _endpoint(self, provider: str) -> str:
        info = self.h.staking.functions.getProvider(Web3.to_checksum_address(provider)).call()
        return str(info[6]).rstrip("/")

    def _published(self, batch_id: int, batch: Batch) -> dict[int, tuple[WorkReceipt, list[bytes]]]:
        """The provider's published leaves whose proofs hold against the committed root."""
        r = self.http.get(f"{self._endpoint(batch.provider)}/v1/serving/batches/{batch_id}/leaves")
        r.raise_for_status()
        body = r.json()
        out: dict[int, tuple[WorkReceipt, list[bytes]]] = {}
        for item in body["leaves"]:
            idx = int(item["index"])
            leaf = work_receipt_from_json(item["receipt"])
            proof = [bytes.fromhex(p[2:]) for p in item["proof"]]
            if merkle.verify(batch.root, batch.count, idx,
                             work_leaf(leaf, self.s.chain_id, self.s.batches.address), proof):
                out[idx] = (leaf, proof)
        return out

    def reexecute(self, leaf: WorkReceipt, *, vote: bool = True) -> tuple[bytes, int, bytes] | str:
        """(output hash, units, output blob) of this verifier's run of ``leaf``, or why it cannot
        compare it (a verdict: ``incomparable`` / ``uncheckable``). Without ``vote`` (sampling:
        only match or not matters) a generation leaf whose claimed output fails the
        teacher-forced check is ``rejected`` without decoding the request."""
        chk = self.checkers.get(leaf.model_id)
        if chk is None or leaf.runtime_hash != chk.runtime_hash or leaf.numerics_class != chk.numerics_class:
            return "incomparable"
        try:
            data = self.blobs.get("0x" + leaf.input_hash.hex())
        except Exception as exc:  # noqa: BLE001 - missing, unreachable: retried until the window closes
            log.info("input blob 0x%s of request 0x%s not available: %s", leaf.input_hash.hex()[:12],
                     leaf.request_id.hex()[:12], exc)
            return "unavailable"
        wl = chk.workload
        try:
            req = wl.decode_request(data)
        except ValueError:
            return "uncheckable"
        if callable(getattr(wl, "verify", None)):
            claimed = self._claimed_output(leaf, wl, req)
            if isinstance(claimed, tuple):
                return claimed
            if claimed == "rejected" and not vote:
                return claimed
        out = wl.execute([req])[0]
        blob = wl.encode_output(req, out)
        return bytes(keccak(blob)), int(wl.units(req, out)), blob

    def _claimed_output(self, leaf: WorkReceipt, wl: Any, req: Any) -> tuple[bytes, int, bytes] | str:
        """A generation leaf's claimed output (its blob, kept by the gateway like the input) when
        one teacher-forced prefill of prompt + output re-samples exactly those tokens with the
        request's seed and the finish reason follows from them: (output hash, units, blob).
        ``rejected`` when it does not, ``unavailable`` when the blob is not to be had; a caller
        that needs the output this runtime gives (a committee vote) then decodes the request."""
        try:
            blob = self.blobs.get("0x" + leaf.output_hash.hex())
        except Exception as exc:  # noqa: BLE001 - missing or unreachable: decode instead
            log.info("output blob 0x%s of request 0x%s not available (%s): decoding it", leaf.output_hash.hex()[:12],
                     leaf.request_id.hex()[:12], exc)
            return "unavailable"
        if not wl.verify(req, blob):
            log.info("request 0x%s: the claimed output is not what this runtime samples", leaf.request_id.hex()[:12])
            return "rejected"
        return leaf.output_hash, int(wl.units(req, wl.decode_output(blob))), blob

    def _check(self, now: int, rep: TickReport) -> None:
        todo = self.state.q("SELECT DISTINCT batch_id FROM leaves WHERE verdict='pending'")
        for (bid,) in todo:
            row = self.state.q("SELECT batch_id, provider, root, count, units, value, committed_at FROM batches "
                               "WHERE batch_id=?", (bid,))[0]
            batch = _batch_of(row)
            if now >= self._challenge_end(batch.committed_at):
                self.state.x("UPDATE leaves SET verdict='expired' WHERE batch_id=? AND verdict='pending'", (bid,))
                self.state.x("UPDATE batches SET status='expired' WHERE batch_id=?", (bid,))
                continue
            try:
                published = self._published(int(bid), batch)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self.state.x("UPDATE batches SET note=? WHERE batch_id=?", (f"leaves not published: {exc}", bid))
                log.warning("batch %d of %s: leaves not available (%s)", bid, batch.provider, exc)
                published = {}
            overdue = now >= batch.committed_at + self.demand_after_s
            for (idx,) in self.state.q("SELECT idx FROM leaves WHERE batch_id=? AND verdict='pending'", (bid,)):
                got = published.get(int(idx))
                if got is None and overdue:
                    self.state.x("UPDATE leaves SET verdict='demand', note='not published' WHERE batch_id=? "
                                 "AND idx=?", (bid, idx))
                    continue
                self._check_leaf(int(bid), int(idx), batch, got, rep)
            if not self.state.q("SELECT 1 FROM leaves WHERE batch_id=? AND verdict='pending'", (bid,)):
                self.state.x("UPDATE batches SET status='done' WHERE batch_id=?", (bid,))

    def _check_leaf(self, bid: int, idx: int, batch: Batch, got: tuple[WorkReceipt, list[bytes]] | None,
                    rep: TickReport) -> None:
        if got is None:  # demanded on-chain once ``demand_after_s`` has passed
            log.info("leaf %d/%d of %s: no valid leaf and proof published", bid, idx, batch.provider)
            return
        leaf, proof = got
        res = self.reexecute(leaf, vote=False)
        if res == "unavailable":
            return
        receipt, proof_json = json.dumps(work_receipt_json(leaf)), json.dumps(["0x" + p.hex() for p in proof])
        if res == "rejected":
            verdict, note = "mismatch", "the claimed output is not what this runtime samples (teacher-forced)"
            rep.mismatched.append((bid, idx))
            log.warning("MISMATCH batch=%d index=%d provider=%s request=0x%s receipt=0x%s: not the tokens this "
                        "runtime samples", bid, idx, batch.provider, leaf.request_id.hex()[:16],
                        leaf.output_hash.hex()[:16])
        elif isinstance(res, str):
            verdict, note = res, "another runtime or numerics class" if res == "incomparable" else "bad input blob"
        else:
            out_hash, units, _ = res
            if out_hash == leaf.output_hash and units == leaf.units:
                verdict, note = "match", None
                rep.matched.append((bid, idx))
            else:
                verdict, note = "mismatch", f"re-executed 0x{out_hash.hex()} units {units}"
                rep.mismatched.append((bid, idx))
                log.warning("MISMATCH batch=%d index=%d provider=%s request=0x%s receipt=0x%s reexecuted=0x%s",
                            bid, idx, batch.provider, leaf.request_id.hex()[:16], leaf.output_hash.hex()[:16],
                            out_hash.hex()[:16])
        self.state.x("UPDATE leaves SET verdict=?, receipt=?, proof=?, note=? WHERE batch_id=? AND idx=? "
                     "AND verdict='pending'", (verdict, receipt, proof_json, note, bid, idx))
        if verdict == "match":
            log.info("verified batch=%d index=%d provider=%s result=match", bid, idx, batch.provider)

    # ------------------------------------------------------------ 5. challenge
    def _case_status(self, bid: int, idx: int) -> tuple[int, str]:
        c = self.f.leafCase(bid, idx).call()
        return int(c[0]), str(c[1])

    def _challenge(self, now: int, rep: TickReport) -> None:
        rows = self.state.q("SELECT l.batch_id, l.idx, l.verdict, l.receipt, l.proof, b.provider, b.root, b.count, "
                            "b.units, b.value, b.committed_at FROM leaves l JOIN batches b USING (batch_id) "
                            "WHERE l.verdict IN ('mismatch', 'challenging')")
        for bid, idx, _verdict, receipt, proof, *brow in rows:
            batch = _batch_of((bid, *brow))
            status, challenger = self._case_status(int(bid), int(idx))
            if status not in (0, 2):  # demanded or disputed already: by us (a restart) or another
                mine = challenger.lower() == self.address.lower()
                self.state.x("UPDATE leaves SET verdict=? WHERE batch_id=? AND idx=?",
                             ("challenged" if mine else "moot", bid, idx))
                if mine:
                    self.state.x("INSERT OR IGNORE INTO disputes (batch_id, idx, challenger) VALUES (?, ?, 1)",
                                 (bid, idx))
                continue
            end = self._challenge_end(batch.committed_at) if status == 0 else int(
                self.f.leafCase(int(bid), int(idx)).call()[2])  # a revealed leaf: its grace period
            if now >= end:
                self.state.x("UPDATE leaves SET verdict='expired' WHERE batch_id=? AND idx=?", (bid, idx))
                continue
            leaf = work_receipt_from_json(json.loads(receipt))
            proof_b = [bytes.fromhex(p[2:]) for p in json.loads(proof)]
            self._approve_bond()
            self.state.x("UPDATE leaves SET verdict='challenging' WHERE batch_id=? AND idx=?", (bid, idx))
            try:
                rcpt = self.sender.send(self.f.challengeLeaf(int(bid), batch.as_tuple(), int(idx), leaf.as_tuple(),
                                                             proof_b))
            except ChainError as exc:
                log.warning("challenge of leaf %d/%d failed: %s", bid, idx, exc)
                continue  # the next tick reads the leaf's case and retries or gives up
            tx = "0x" + bytes(rcpt["transactionHash"]).hex()
            with self.state.tx() as c:
                c.execute("UPDATE leaves SET verdict='challenged', challenge_tx=? WHERE batch_id=? AND idx=?",
                          (tx, bid, idx))
                c.execute("INSERT OR IGNORE INTO disputes (batch_id, idx) VALUES (?, ?)", (bid, idx))
                c.execute("UPDATE disputes SET challenger=1 WHERE batch_id=? AND idx=?", (bid, idx))
            rep.challenged.append((int(bid), int(idx)))
            log.warning("challenged batch=%d index=%d provider=%s block=%d tx=%s", bid, idx, batch.provider,
                        rcpt["blockNumber"], tx)

    # ------------------------------------------------------------ withheld leaves
    def _demand(self, now: int, rep: TickReport) -> None:
        """Demands the sampled leaves the provider did not publish, then checks what it reveals, or
        settles a leaf as withheld (fraud) once its reveal deadline passed."""
        rows = self.state.q("SELECT l.batch_id, l.idx, l.verdict, b.provider, b.root, b.count, b.units, b.value, "
                            "b.committed_at FROM leaves l JOIN batches b USING (batch_id) "
                            "WHERE l.verdict IN ('demand', 'demanded')")
        for bid, idx, verdict, *brow in rows:
            bid, idx = int(bid), int(idx)
            batch = _batch_of((bid, *brow))
            case = self.f.leafCase(bid, idx).call()
            status, mine, deadline = int(case[0]), str(case[1]).lower() == self.address.lower(), int(case[2])
            if verdict == "demand":
                if status == 0:
                    if now >= self._challenge_end(batch.committed_at):
                        self.state.x("UPDATE leaves SET verdict='expired' WHERE batch_id=? AND idx=?", (bid, idx))
                        continue
                    self._approve_bond()
                    try:
                        rcpt = self.sender.send(self.f.demandLeaf(bid, batch.as_tuple(), idx))
                    except ChainError as exc:
                        log.warning("demand of leaf %d/%d failed: %s", bid, idx, exc)
                        continue
                    log.warning("demanded leaf batch=%d index=%d provider=%s block=%d tx=0x%s", bid, idx,
                                batch.provider, rcpt["blockNumber"], bytes(rcpt["transactionHash"]).hex())
                    status, mine = 1, True
                if status != 1 or not mine:
                    self.state.x("UPDATE leaves SET verdict='moot', note='questioned by another' WHERE batch_id=? "
                                 "AND idx=?", (bid, idx))
                    continue
                self.state.x("UPDATE leaves SET verdict='demanded' WHERE batch_id=? AND idx=?", (bid, idx))
                continue
            if status == 1 and now >= deadline:
                try:
                    rcpt = self.sender.send(self.f.settleWithheldLeaf(bid, batch.as_tuple(), idx))
                except ChainError as exc:
                    log.warning("settleWithheldLeaf %d/%d failed: %s", bid, idx, exc)
                    continue
                self.state.x("UPDATE leaves SET verdict='withheld' WHERE batch_id=? AND idx=?", (bid, idx))
                rep.resolved.append((bid, idx))
                log.warning("leaf withheld, fraud: batch=%d index=%d provider=%s block=%d tx=0x%s", bid, idx,
                            batch.provider, rcpt["blockNumber"], bytes(rcpt["transactionHash"]).hex())
            elif status == 2:  # revealed: checked like a published leaf (a challenge may follow)
                got = self._revealed(bid, idx)
                if got is not None:
                    self.state.x("UPDATE leaves SET verdict='pending' WHERE batch_id=? AND idx=?", (bid, idx))
                    self._check_leaf(bid, idx, batch, got, rep)
            elif status == 5:
                self.state.x("UPDATE leaves SET verdict='withheld' WHERE batch_id=? AND idx=?", (bid, idx))
            elif status != 1:
                self.state.x("UPDATE leaves SET verdict='moot' WHERE batch_id=? AND idx=?", (bid, idx))

    def _logs(self, event: Any, **filters: Any) -> list[Any]:
        """``event``'s logs matching ``filters`` from the start block to the head, in chunks."""
        out: list[Any] = []
        for a, b in chunk(self.start_block, int(self.w3.eth.block_number), self.log_chunk_blocks):
            out.extend(event.get_logs(from_block=a, to_block=b, argument_filters=filters))
        return out

    def _revealed(self, bid: int, idx: int) -> tuple[WorkReceipt, list[bytes]] | None:
        """The leaf and proof a ``revealLeaf`` sent (its calldata)."""
        logs = self._logs(self.ev.LeafRevealed(), batchId=bid, index=idx)
        if not logs:
            return None
        tx = self.w3.eth.get_transaction(logs[-1]["transactionHash"])
        _, params = self.s.batches.decode_function_input(tx["input"])
        return _receipt(params["leaf"]), [bytes(p) for p in params["proof"]]

    def _approve_bond(self) -> None:
        bond = int(self.s.params().demand_bond)
        if bond and int(self.h.usd.functions.allowance(self.address, self.s.batches.address).call()) < bond:
            self.sender.send(self.h.usd.functions.approve(self.s.batches.address, bond * 100))

    # ------------------------------------------------------------ 5-6. disputes
    _VIEW = ("challenger", "provider", "phase", "bond", "drawBlock", "challengedAt", "commitEnd", "revealEnd",
             "escalationEnd", "seats", "agreeSeats", "disagreeSeats", "modelId", "gpuClass", "outputHash", "units")

    def dispute_view(self, bid: int, idx: int) -> dict[str, Any]:
        return dict(zip(self._VIEW, self.f.leafDispute(bid, idx).call(), strict=True))

    def _disputes(self, head: int, now: int, rep: TickReport) -> None:
        rows = self.state.q("SELECT batch_id, idx, challenger, seats, commit_end, reveal_end, vote, output_hash, "
                            "units, salt FROM disputes WHERE resolved=0")
        for bid, idx, challenger, seats, commit_end, reveal_end, vote, out_hash, units, salt in rows:
            bid, idx = int(bid), int(idx)
            d = self.dispute_view(bid, idx)
            phase = Phase(int(d["phase"]))
            if phase == Phase.AWAITING_DRAW:
                if head > int(d["drawBlock"]):
                    self._draw(bid, idx, head, int(d["drawBlock"]))
                continue
            if seats and vote in ("pending", "committed"):
                if vote == "pending" and now < int(commit_end):
                    self._commit(bid, idx, out_hash, units, salt, rep)
                elif vote == "committed" and int(commit_end) <= now < int(reveal_end):
                    self._reveal(bid, idx, bytes(out_hash), int(units), bytes(salt), rep)
                elif now >= (int(commit_end) if vote == "pending" else int(reveal_end)):
                    self.state.x("UPDATE disputes SET vote='missed' WHERE batch_id=? AND idx=?", (bid, idx))
                    log.warning("missed the %s phase of leaf %d/%d", "commit" if vote == "pending" else "reveal",
                                bid, idx)
            if phase == Phase.SETTLED:
                self._settled(bid, idx)
                continue
            due = (phase == Phase.NO_COMMITTEE or (phase == Phase.VOTING and now >= int(d["revealEnd"]))
                   or (phase == Phase.ESCALATED and now >= int(d["escalationEnd"])))
            if due and (challenger or seats):
                self._resolve(bid, idx, rep)

    def _draw(self, bid: int, idx: int, head: int, draw_block: int) -> None:
        if head > draw_block + 256:
            # Too late to draw: resolve settles neutrally.
            self._resolve(bid, idx, TickReport.empty())
            return
        try:
            rcpt = self.sender.send(self.f.drawLeafCommittee(bid, idx))
        except ChainError as exc:
            log.info("drawLeafCommittee %d/%d: %s", bid, idx, exc)
            return
        log.info("drew the committee of leaf %d/%d block=%d tx=0x%s", bid, idx, rcpt["blockNumber"],
                 bytes(rcpt["transactionHash"]).hex())

    def _disputed_leaf(self, bid: int, idx: int) -> WorkReceipt | None:
        """The disputed leaf as its challenger sent it (the ``challengeLeaf`` calldata)."""
        rows = self.state.q("SELECT receipt FROM leaves WHERE batch_id=? AND idx=? AND receipt IS NOT NULL",
                            (bid, idx))
        if rows:
            return work_receipt_from_json(json.loads(rows[0][0]))
        logs = self._logs(self.ev.LeafChallenged(), batchId=bid, index=idx)
        if not logs:
            return None
        tx = self.w3.eth.get_transaction(logs[-1]["transactionHash"])
        _, params = self.s.batches.decode_function_input(tx["input"])
        return _receipt(params["leaf"])

    def _commit(self, bid: int, idx: int, out_hash: bytes | None, units: int | None, salt: bytes | None,
                rep: TickReport) -> None:
        did = (bid << 32) | idx
        if out_hash is None or salt is None:
            leaf = self._disputed_leaf(bid, idx)
            if leaf is None:
                return
            res = self.reexecute(leaf)
            if res == "unavailable":
                return
            if isinstance(res, str):
                self.state.x("UPDATE disputes SET vote='abstained' WHERE batch_id=? AND idx=?", (bid, idx))
                log.warning("abstaining on leaf %d/%d: %s", bid, idx, res)
                return
            out_hash, units, salt = res[0], res[1], os.urandom(32)
            # The salt is kept before the commitment leaves this process.
            self.state.x("UPDATE disputes SET output_hash=?, units=?, salt=? WHERE batch_id=? AND idx=?",
                         (out_hash, units, salt, bid, idx))
        m = self.f.leafMember(bid, idx, self.address).call()
        if bool(m[1]):  # committed already (a restart after the transaction was mined)
            self.state.x("UPDATE disputes SET vote='committed' WHERE batch_id=? AND idx=?", (bid, idx))
            return
        commitment = vote_commitment(did, self.address, bytes(out_hash), int(units or 0), bytes(salt))
        try:
            rcpt = self.sender.send(self.f.commitLeafVote(bid, idx, commitment))
        except ChainError as exc:
            log.warning("commit on leaf %d/%d failed: %s", bid, idx, exc)
            return
        self.state.x("UPDATE disputes SET vote='committed' WHERE batch_id=? AND idx=?", (bid, idx))
        rep.voted.append((bid, idx))
        log.info("committed vote on leaf %d/%d block=%d tx=0x%s", bid, idx, rcpt["blockNumber"],
                 bytes(rcpt["transactionHash"]).hex())

    def _reveal(self, bid: int, idx: int, out_hash: bytes, units: int, salt: bytes, rep: TickReport) -> None:
        m = self.f.leafMember(bid, idx, self.address).call()
        if bool(m[2]):
            self.state.x("UPDATE disputes SET vote='revealed' WHERE batch_id=? AND idx=?", (bid, idx))
            return
        try:
            rcpt = self.sender.send(self.f.revealLeafVote(bid, idx, out_hash, units, salt))
        except ChainError as exc:
            log.warning("reveal on leaf %d/%d failed: %s", bid, idx, exc)
            return
        self.state.x("UPDATE disputes SET vote='revealed' WHERE batch_id=? AND idx=?", (bid, idx))
        log.info("revealed vote on leaf %d/%d output=0x%s units=%d block=%d tx=0x%s", bid, idx, out_hash.hex()[:16],
                 units, rcpt["blockNumber"], bytes(rcpt["transactionHash"]).hex())

    def _batch(self, bid: int) -> Batch | None:
        rows = self.state.q("SELECT batch_id, provider, root, count, units, value, committed_at FROM batches "
                            "WHERE batch_id=?", (bid,))
        return _batch_of(rows[0]) if rows else None

    def _resolve(self, bid: int, idx: int, rep: TickReport) -> None:
        batch = self._batch(bid)
        if batch is None:
            return
        try:
            rcpt = self.sender.send(self.f.resolveLeafDispute(bid, batch.as_tuple(), idx))
        except ChainError as exc:
            log.info("resolveLeafDispute %d/%d: %s", bid, idx, exc)
            if self._case_status(bid, idx)[0] in (4, 5):  # Upheld / Fraud: someone else resolved it
                self._settled(bid, idx)
            return
        rep.resolved.append((bid, idx))
        log.warning("resolved leaf dispute batch=%d index=%d block=%d tx=0x%s", bid, idx, rcpt["blockNumber"],
                    bytes(rcpt["transactionHash"]).hex())
        if self._case_status(bid, idx)[0] in (4, 5):
            self._settled(bid, idx)

    def _settled(self, bid: int, idx: int) -> None:
        status = self._case_status(bid, idx)[0]
        outcome = {4: "upheld", 5: "fraud"}.get(status, f"status {status}")
        self.state.x("UPDATE disputes SET resolved=1, outcome=? WHERE batch_id=? AND idx=?", (outcome, bid, idx))
        log.info("leaf dispute %d/%d ended: %s", bid, idx, outcome)

    def _withdraw(self) -> None:
        me = self.address
        if int(self.f.rewardOf(me).call()):
            try:
                rcpt = self.sender.send(self.f.withdrawRewards(me))
                log.info("withdrew staking rewards tx=0x%s", bytes(rcpt["transactionHash"]).hex())
            except ChainError as exc:
                log.warning("withdrawRewards failed: %s", exc)
        if int(self.f.balanceOf(me).call()) >= max(1, self.min_withdraw):
            try:
                self.sender.send(self.f.withdraw(me))
            except ChainError as exc:
                log.warning("withdraw failed: %s", exc)

    # ------------------------------------------------------------ views
    def summary(self) -> dict[str, Any]:
        verdicts = dict(self.state.q("SELECT verdict, COUNT(*) FROM leaves GROUP BY verdict"))
        disputes = [{"batch_id": r[0], "index": r[1], "challenger": bool(r[2]), "seats": r[3], "vote": r[4],
                     "outcome": r[5]} for r in self.state.q(
                        "SELECT batch_id, idx, challenger, seats, vote, outcome FROM disputes ORDER BY batch_id, idx")]
        return {"verifier": self.address, "leaves": verdicts, "disputes": disputes}

    def leaves(self) -> list[tuple[int, int, str, str]]:
        """(batch id, index, provider, verdict) of every sampled leaf."""
        return [(int(a), int(b), str(c), str(d)) for a, b, c, d in self.state.q(
            "SELECT l.batch_id, l.idx, b.provider, l.verdict FROM leaves l JOIN batches b USING (batch_id) "
            "ORDER BY l.batch_id, l.idx")]


def embedding_checker(backend: str = "torch", dtype: str = "fp32", device: str | None = None,
                      gpu_class: str = "cpu", encoder: Any = None) -> tuple[bytes, Checker]:
    """MiniLM's checker: (model id, checker) with this process's encoder."""
    from contracts.types import gpu_class_bytes
    from worker.node.compute import shared_encoder
    from worker.workloads import EmbeddingWorkload

    enc = encoder if encoder is not None else shared_encoder(backend, dtype, device)
    wl = EmbeddingWorkload(enc)
    return wl.model_id(), Checker(wl, enc.runtime_hash(), gpu_class_bytes(gpu_class))


_llm_lock = threading.Lock()
_llm: tuple[Any, Any] | None = None


def shared_llm() -> tuple[Any, Any]:
    """SmolLM2's forward and tokenizer, loaded once per process (~10 s)."""
    global _llm
    with _llm_lock:
        if _llm is None:
            from worker.model.llm import ChatTokenizer, LlamaForward, load_weights

            _llm = (LlamaForward(load_weights()), ChatTokenizer.from_gguf())
            log.info("loaded SmolLM2 for verification")
        return _llm


def generation_checker(model_id: bytes, gpu_class: str = "cpu", forward: Any = None,
                       tokenizer: Any = None) -> Checker:
    """SmolLM2's checker: the endpoint's own ``forward``/``tokenizer`` when it serves it, else
    loaded (:func:`shared_llm`) when the first generation leaf is checked."""
    from contracts.types import gpu_class_bytes
    from worker.workloads.generation import GenerationWorkload, runtime_hash

    def load() -> Any:
        fwd, tok = (forward, tokenizer) if forward is not None else shared_llm()
        return GenerationWorkload(fwd, tok, model_id=model_id)

    return Checker(None, runtime_hash(), gpu_class_bytes(gpu_class), load=load)


def build(st: VerifierSettings, *, encoder: Any = None, settlement: Settlement | None = None,
          llm_forward: Any = None, llm_tokenizer: Any = None) -> BatchVerifier:
    """A verifier from settings (``encoder``/``settlement`` let a caller share its own, and
    ``llm_forward``/``llm_tokenizer`` SmolLM2's). Generation leaves are checked when the
    manifest registers SmolLM2 (under its runtime) and this verifier runs the torch backend."""
    from contracts.bindings import Hearth
    from contracts.manifest import Manifest

    key = st.key.get_secret_value() if st.key else ""
    if not key and st.devnet_role:
        from common import accounts

        key = accounts.load(st.data_dir / accounts.ACCOUNTS_FILE)[st.devnet_role].key
    if not key:
        raise VerifierError("no verifier key: set HEARTH_VERIFIER_KEY (or HEARTH_VERIFIER_DEVNET_ROLE on a devnet)")
    if settlement is None:
        settlement = Settlement(Hearth(Manifest.load(st.manifest_file())))
    address = str(Account.from_key(key).address)
    model_id, checker = embedding_checker(st.backend, st.dtype, st.device, st.gpu_class, encoder)
    checkers = {model_id: checker}
    if st.backend == "torch" and st.dtype == "fp32":
        from worker.workloads.generation import runtime_hash as llm_runtime_hash

        llm_rt = "0x" + llm_runtime_hash().hex()
        for m in settlement.h.manifest.models:
            if m.runtime_hash.lower() == llm_rt:
                llm_id = bytes.fromhex(m.model_id[2:])
                checkers[llm_id] = generation_checker(llm_id, st.gpu_class, llm_forward, llm_tokenizer)
    path = st.state_path or state_path(st.data_dir, settlement.chain_id, settlement.batches.address, address)
    blobs = st.open_blobs(st.data_dir, key)
    return BatchVerifier(settlement, key, checkers, blobs, VerifierState(path, address),
                         sample_rate_bps=st.sample_rate_bps, min_samples=st.min_samples,
                         confirmations=st.confirmations, demand_after_s=st.demand_after_s,
                         min_withdraw=st.min_withdraw,
                         http_timeout_s=st.http_timeout_s)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import signal

    ap = argparse.ArgumentParser(prog="python -m worker.serving.verifier", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devnet-role")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--blob-url")
    ap.add_argument("--sample-rate-bps", type=int)
    ap.add_argument("--once", action="store_true", help="one tick, print a summary, exit")
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "once"}
    st = VerifierSettings(**overrides)
    logging.basicConfig(level=st.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("web3", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    v = build(st)
    log.info("batch verifier %s: sampling %d bps (at least %d) of every batch, state %s", v.address,
             st.sample_rate_bps, st.min_samples, v.state)
    if args.once:
        v.tick()
        print(json.dumps(v.summary(), indent=2))
        v.close()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        v.run(stop, st.poll_s)
    finally:
        v.close()


if __name__ == "__main__":
    main()
