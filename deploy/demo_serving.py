"""``make demo`` (``python -m deploy demo-serving``): the serving plane as a client sees it, against
a running ``make up``.

It registers two API keys for the devnet's payer (role ``client``) at the gateway, one that
prefers the ``eu-west`` region and one with no preference, and sends a few hundred embeddings
requests through the official ``openai`` client, alternating between the keys, several at a
time, with a progress bar, then a handful of streamed SmolLM2 chat completions the same way
(:func:`run_chat`: tokens, time to first token, latency and who served each). Then it waits for
the providers to commit the answered requests in batches, and prints:

* latency percentiles (p50, p90, p99) and requests per second, as the client measured them;
* which provider served what, from the ``hearth`` object of each answer (region and quoted
  price from the gateway's provider list): requests, tokens, cost;
* from the chain, over the blocks of the run: the batches the providers committed
  (``BatchCommitted``), the vouchers they collected from the payer's lanes (``Collected``), the
  gateway's lane top-ups (``Allocated`` by the gateway's signer), and the gas all of those
  transactions used, per answered request.

:func:`run_demo` is the part the tests run (small ``n``); :func:`main` adds the set-up (keys)
and the printing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any

import httpx

#: Sentences the requests are made of (one to three per request).
SENTENCES = (
    "Hearth answers embeddings in inference time.",
    "Requests go straight to a nearby provider.",
    "Receipts are committed on-chain in batches.",
    "Vouchers are collected later, in one transaction for many requests.",
    "A verifier re-executes sampled leaves and challenges mismatches.",
    "The gateway keeps the payer's lanes topped up.",
    "Capacity follows stake, not a per-job lock.",
    "Le réseau répond en quelques millisecondes.",
)


class DemoError(Exception):
    """The stack is not in a state the demo can run against (printed as one line)."""


@dataclass
class ProviderShare:
    address: str
    region: str
    price: int
    requests: int = 0
    tokens: int = 0
    cost: int = 0


@dataclass(frozen=True)
class ChainTx:
    """One settlement transaction of the run: what it did, by whom, and its gas."""

    kind: str  # "batch", "collect" or "top-up"
    provider: str
    #: leaves of a batch; hUSD wei collected or allocated otherwise
    amount: int
    tx_hash: str
    block: int


@dataclass
class DemoResult:
    requests: int
    answered: int
    seconds: float
    latencies_ms: list[float]
    providers: dict[str, ProviderShare]
    failures: dict[str, int] = field(default_factory=dict)
    batches: list[ChainTx] = field(default_factory=list)
    collections: list[ChainTx] = field(default_factory=list)
    topups: list[ChainTx] = field(default_factory=list)
    #: gas used by each distinct transaction above
    gas_by_tx: dict[str, int] = field(default_factory=dict)
    first_block: int = 0
    last_block: int = 0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the latencies (nearest rank), in ms."""
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, max(0, int(round(q / 100 * len(xs) + 0.5)) - 1))]

    @property
    def requests_per_s(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    @property
    def gas_total(self) -> int:
        return sum(self.gas_by_tx.values())

    @property
    def gas_per_request(self) -> float:
        return self.gas_total / self.answered if self.answered else 0.0

    @property
    def leaves_committed(self) -> int:
        return sum(b.amount for b in self.batches)


def texts_for(i: int) -> list[str]:
    k = 1 + i % 3
    return [f"{SENTENCES[(i + j) % len(SENTENCES)]} (request {i}, part {j})" for j in range(k)]


def routable_providers(gateway_url: str, timeout_s: float = 0.0) -> dict[str, ProviderShare]:
    """The gateway's routable providers (address -> region and price); waits up to ``timeout_s``
    for at least one."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.get(f"{gateway_url.rstrip('/')}/v1/serving/providers", timeout=10)
            r.raise_for_status()
            found = {p["address"]: ProviderShare(p["address"], p["region"], int(p["price"])) for p in r.json()}
        except httpx.HTTPError as exc:
            raise DemoError(f"cannot reach the gateway at {gateway_url} ({exc}): is `make up` running?") from None
        if found or time.monotonic() >= end:
            return found
        time.sleep(1.0)


def run_demo(gateway_url: str, api_keys: Sequence[str], hearth: Any, payer: str, n: int, *, concurrency: int = 8,
             model: str = "all-MiniLM-L6-v2", settle_timeout_s: float = 30.0, collect_wait_s: float = 3.0,
             on_answer: Callable[[], None] | None = None) -> DemoResult:
    """Sends ``n`` requests (request ``i`` with ``api_keys[i % len(api_keys)]``) through the
    official ``openai`` client, ``concurrency`` at a time; waits until the providers' batches
    since the first block cover every answered request (at most ``settle_timeout_s``) and
    ``collect_wait_s`` more for collections; reads the settlement transactions of the run."""
    import openai

    providers = routable_providers(gateway_url)
    if not providers:
        raise DemoError(f"the gateway at {gateway_url} routes to no serving-plane provider")
    w3 = hearth.w3
    first_block = int(w3.eth.block_number) + 1
    clients = [openai.OpenAI(base_url=f"{gateway_url.rstrip('/')}/v1", api_key=k, timeout=60) for k in api_keys]

    def one(i: int) -> tuple[float, dict[str, Any], int]:
        t0 = time.perf_counter()
        r = clients[i % len(clients)].embeddings.create(model=model, input=texts_for(i))
        ms = (time.perf_counter() - t0) * 1000
        info = (r.model_extra or {}).get("hearth") or {}
        return ms, info, int(r.usage.prompt_tokens)

    latencies: list[float] = []
    failures: dict[str, int] = {}
    t_start = time.perf_counter()
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        for fut in as_completed(futures):
            try:
                ms, info, tokens = fut.result()
            except openai.APIStatusError as exc:
                reason = _reason(exc)
                failures[reason] = failures.get(reason, 0) + 1
            except openai.APIError as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            else:
                latencies.append(ms)
                addr = str(info.get("provider", "?"))
                share = providers.setdefault(addr, ProviderShare(addr, "?", 0))
                share.requests += 1
                share.tokens += tokens
                share.cost += int(info.get("cost", 0))
            if on_answer is not None:
                on_answer()
    seconds = time.perf_counter() - t_start
    for c in clients:
        c.close()
    res = DemoResult(requests=n, answered=len(latencies), seconds=seconds, latencies_ms=latencies,
                     providers=providers, failures=failures, first_block=first_block)
    served_by = {a: s.requests for a, s in providers.items() if s.requests}
    end = time.monotonic() + settle_timeout_s
    while True:
        read_settlement(res, hearth, payer, set(served_by))
        per_provider: dict[str, int] = {}
        for b in res.batches:
            per_provider[b.provider] = per_provider.get(b.provider, 0) + b.amount
        if all(per_provider.get(a, 0) >= k for a, k in served_by.items()) or time.monotonic() >= end:
            break
        time.sleep(0.5)
    time.sleep(collect_wait_s)
    read_settlement(res, hearth, payer, set(served_by))
    return res


#: What the demo's chat completions ask SmolLM2 (request ``i`` asks ``CHAT_PROMPTS[i % 5]``).
CHAT_PROMPTS = (
    "What is a GPU, in one sentence?",
    "Name three uses of text embeddings.",
    "Write a haiku about a hearth.",
    "Why do receipts need signatures?",
    "Give one tip for writing clear documentation.",
)


@dataclass(frozen=True)
class ChatAnswer:
    """One streamed chat completion as the client saw it."""

    provider: str
    prompt_tokens: int
    completion_tokens: int
    #: time to the first content chunk, and to the end of the stream, in ms
    ttft_ms: float
    total_ms: float
    cost: int
    text: str


@dataclass
class ChatResult:
    requests: int
    answers: list[ChatAnswer]
    seconds: float
    failures: dict[str, int] = field(default_factory=dict)


def run_chat(gateway_url: str, api_keys: Sequence[str], n: int, *, concurrency: int = 5, max_tokens: int = 32,
             model: str = "SmolLM2-135M-Instruct") -> ChatResult:
    """Streams ``n`` chat completions (request ``i`` with ``api_keys[i % len(api_keys)]``, seed
    ``i``) through the official ``openai`` client, ``concurrency`` at a time (the provider decodes
    them in one continuous batch)."""
    import openai

    clients = [openai.OpenAI(base_url=f"{gateway_url.rstrip('/')}/v1", api_key=k, timeout=300) for k in api_keys]

    def one(i: int) -> ChatAnswer:
        t0 = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        hearth: dict[str, Any] = {}
        usage = None
        stream = clients[i % len(clients)].chat.completions.create(
            model=model, messages=[{"role": "user", "content": CHAT_PROMPTS[i % len(CHAT_PROMPTS)]}],
            max_tokens=max_tokens, seed=i, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                ttft = ttft if ttft is not None else time.perf_counter()
                parts.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                hearth = (chunk.model_extra or {}).get("hearth") or {}
            if chunk.usage:
                usage = chunk.usage
        end = time.perf_counter()
        if usage is None:
            raise DemoError("a stream ended without usage")
        return ChatAnswer(str(hearth.get("provider", "?")), int(usage.prompt_tokens), int(usage.completion_tokens),
                          ((ttft or end) - t0) * 1000, (end - t0) * 1000, int(hearth.get("cost", 0)), "".join(parts))

    answers: list[ChatAnswer] = []
    failures: dict[str, int] = {}
    t_start = time.perf_counter()
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        for fut in as_completed([pool.submit(one, i) for i in range(n)]):
            try:
                answers.append(fut.result())
            except openai.APIStatusError as exc:
                failures[_reason(exc)] = failures.get(_reason(exc), 0) + 1
            except (openai.APIError, DemoError) as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
    seconds = time.perf_counter() - t_start
    for c in clients:
        c.close()
    return ChatResult(n, answers, seconds, failures)


def _reason(exc: Any) -> str:
    try:
        return f"{exc.status_code} {exc.body['reason'] if isinstance(exc.body, dict) else exc.body}"
    except (KeyError, TypeError):
        return str(exc.status_code)


def read_settlement(res: DemoResult, hearth: Any, payer: str, providers: set[str]) -> None:
    """Fills ``res`` with the run's settlement transactions, read from the chain: the providers'
    batch commits, their collections from ``payer``'s lanes, and the top-ups of those lanes by
    anyone but the payer (the gateway's signer), with each transaction's gas."""
    from web3 import Web3

    w3 = hearth.w3
    last = int(w3.eth.block_number)
    if last < res.first_block:
        # No block since the run began (settlement not sent yet): an empty range, which Anvil
        # refuses with BlockOutOfRangeError rather than answering with no logs.
        res.last_block = last
        return
    payer = Web3.to_checksum_address(payer)
    batches, collections, topups = [], [], []
    for lg in hearth.settlement.events.BatchCommitted().get_logs(from_block=res.first_block, to_block=last):
        a = lg["args"]
        if a["provider"] in providers:
            batches.append(ChainTx("batch", a["provider"], int(a["count"]), _hex(lg["transactionHash"]),
                                   int(lg["blockNumber"])))
    escrow = hearth.escrow
    for lg in escrow.events.Collected().get_logs(from_block=res.first_block, to_block=last,
                                                 argument_filters={"payer": payer}):
        a = lg["args"]
        collections.append(ChainTx("collect", a["provider"], int(a["amount"]), _hex(lg["transactionHash"]),
                                   int(lg["blockNumber"])))
    for lg in escrow.events.Allocated().get_logs(from_block=res.first_block, to_block=last,
                                                 argument_filters={"payer": payer}):
        a = lg["args"]
        if a["by"] != payer:
            topups.append(ChainTx("top-up", a["provider"], int(a["amount"]), _hex(lg["transactionHash"]),
                                  int(lg["blockNumber"])))
    res.batches, res.collections, res.topups, res.last_block = batches, collections, topups, last
    for tx in {t.tx_hash for t in (*batches, *collections, *topups)} - set(res.gas_by_tx):
        res.gas_by_tx[tx] = int(w3.eth.get_transaction_receipt(tx)["gasUsed"])
    res.gas_by_tx = {tx: g for tx, g in res.gas_by_tx.items()
                     if tx in {t.tx_hash for t in (*batches, *collections, *topups)}}


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if len(address) == 42 else address


def _hex(b: Any) -> str:
    return "0x" + bytes(b).hex()


# ---------------------------------------------------------------- set-up and printing


def create_api_key(gateway_url: str, wallet_key: str, cap: int, region: str | None = None) -> str:
    """Registers a new API key for ``wallet_key``'s wallet at the gateway (a signed grant); the
    serving plane needs no allowance to the relayer (it is paid from the payer's lanes)."""
    import secrets

    from eth_account import Account
    from eth_utils import keccak

    from deploy.gateway_client import GatewayClient, GatewayRefused

    key = "hk-" + secrets.token_hex(16)
    wallet = Account.from_key(wallet_key).address
    try:
        with GatewayClient(gateway_url) as gw:
            td = gw.call("GET", "/v1/api-keys/typed-data", "the grant", params={
                "wallet": wallet, "api_key_hash": "0x" + keccak(text=key).hex(), "spending_cap": cap})["typed_data"]
            msg = {f["name"]: (int(td["message"][f["name"]]) if f["type"].startswith("uint")
                               else td["message"][f["name"]]) for f in td["types"][td["primaryType"]]}
            sig = Account.sign_typed_data(wallet_key, full_message={**td, "message": msg}).signature
            body: dict[str, Any] = {"grant": td["message"], "signature": "0x" + bytes(sig).hex()}
            if region:
                body["region"] = region
            gw.call("POST", "/v1/api-keys", "the grant", json=body)
    except GatewayRefused as exc:
        raise DemoError(str(exc)) from None
    return key


def main(n: int = 300, concurrency: int = 8, gateway: str = "http://127.0.0.1:8000", payer_role: str = "client",
         region: str = "eu-west", chats: int = 10) -> DemoResult:
    import logging

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from common import accounts
    from contracts.bindings import Hearth
    from contracts.manifest import Manifest
    from deploy.settings import CliSettings

    # The openai client logs every request (and retry) at INFO: the progress bar says it better.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    console = Console(soft_wrap=True)
    if find_spec("openai") is None:
        raise DemoError("the demo needs the `openai` package: pip install -e '.[dev]' (make does this)")
    st = CliSettings()
    try:
        manifest = Manifest.load(st.manifest_file())
        acc = accounts.load(st.data_dir / accounts.ACCOUNTS_FILE)
    except Exception as exc:  # noqa: BLE001 - one line: the stack is not up
        raise DemoError(f"{exc} (start the stack with `make up` first)") from None
    if payer_role not in acc:
        raise DemoError(f"no devnet role {payer_role!r}")
    h = Hearth(manifest)
    if h.escrow is None or h.settlement is None:
        raise DemoError("this deployment has no serving plane (PaymentEscrow, BatchSettlement): restart `make up`")
    with console.status("waiting for the gateway to see the serving-plane providers..."):
        providers = routable_providers(gateway, timeout_s=60)
    if not providers:
        raise DemoError(f"the gateway at {gateway} routes to no serving-plane provider after 60 s")
    payer = acc[payer_role]
    keys = [create_api_key(gateway, payer.key, 100 * 10**6, region), create_api_key(gateway, payer.key, 100 * 10**6)]
    console.print(f"{n} requests from {payer.address} ({payer_role}), {concurrency} at a time, through the openai "
                  f"client: odd ones with a key preferring {region}, even ones with a key that states no region")
    with Progress(TextColumn("[bold]requests"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("requests", total=n)
        res = run_demo(gateway, keys[::-1], h, payer.address, n, concurrency=concurrency,
                       on_answer=lambda: bar.advance(task))
    print_result(console, res)
    if chats:
        with console.status(f"{chats} streamed SmolLM2 chat completions (32 tokens at most), 5 at a time..."):
            chat = run_chat(gateway, keys[::-1], chats)
        print_chat(console, chat, res.providers)
    return res


def print_chat(console: Any, res: ChatResult, providers: dict[str, ProviderShare]) -> None:
    from rich.table import Table

    from deploy.cli import USD_DECIMALS, fmt

    t = Table(title=f"{len(res.answers)} of {res.requests} streamed chat completions (SmolLM2) in "
                    f"{res.seconds:.1f} s, {sum(a.completion_tokens for a in res.answers)} tokens generated")
    for c in ("provider", "region", "prompt", "completion", "first token ms", "total ms", "tokens/s", "cost hUSD",
              "reply"):
        t.add_column(c, justify="left" if c in ("provider", "region", "reply") else "right", no_wrap=c != "reply")
    for a in sorted(res.answers, key=lambda a: a.total_ms):
        decode_s = (a.total_ms - a.ttft_ms) / 1000
        rate = (a.completion_tokens - 1) / decode_s if decode_s > 0 and a.completion_tokens > 1 else 0.0
        region = providers[a.provider].region if a.provider in providers else "?"
        reply = a.text.strip().replace("\n", " ")
        t.add_row(_short(a.provider), region, str(a.prompt_tokens), str(a.completion_tokens), f"{a.ttft_ms:.0f}",
                  f"{a.total_ms:.0f}", f"{rate:.1f}", fmt(a.cost, USD_DECIMALS),
                  reply if len(reply) <= 40 else reply[:39] + "…")
    console.print(t)
    if res.failures:
        console.print("[red]chat failed:[/] " + ", ".join(f"{k}: {v}" for k, v in sorted(res.failures.items())))


def print_result(console: Any, res: DemoResult) -> None:
    from rich.table import Table

    from deploy.cli import USD_DECIMALS, fmt

    t = Table(title=f"{res.answered} of {res.requests} requests answered in {res.seconds:.1f} s "
                    f"({res.requests_per_s:.1f} requests/s)")
    for c in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "max ms"):
        t.add_column(c, justify="right")
    if res.latencies_ms:
        t.add_row(*(f"{x:.1f}" for x in (res.percentile(50), res.percentile(90), res.percentile(99),
                                          statistics.fmean(res.latencies_ms), max(res.latencies_ms))))
    console.print(t)
    if res.failures:
        console.print("[red]failed:[/] " + ", ".join(f"{k}: {v}" for k, v in sorted(res.failures.items())))
    order = sorted(res.providers.items(), key=lambda kv: -kv[1].requests)
    t = Table(title="who served what (from each answer's hearth object)")
    for c in ("provider", "region", "price/token", "requests", "tokens", "cost hUSD"):
        t.add_column(c, justify="left" if c in ("provider", "region") else "right", no_wrap=True)
    for a, p in order:
        t.add_row(_short(a), p.region, str(p.price), str(p.requests), str(p.tokens), fmt(p.cost, USD_DECIMALS))
    console.print(t)
    t = Table(title="settlement on-chain during the run")
    for c in ("provider", "batches", "leaves", "vouchers", "collected hUSD", "top-ups", "topped up hUSD"):
        t.add_column(c, justify="left" if c == "provider" else "right", no_wrap=True)
    for a, _ in order:
        t.add_row(_short(a), str(sum(1 for b in res.batches if b.provider == a)),
                  str(sum(b.amount for b in res.batches if b.provider == a)),
                  str(sum(1 for c in res.collections if c.provider == a)),
                  fmt(sum(c.amount for c in res.collections if c.provider == a), USD_DECIMALS),
                  str(sum(1 for c in res.topups if c.provider == a)),
                  fmt(sum(c.amount for c in res.topups if c.provider == a), USD_DECIMALS))
    console.print(t)
    n_collect_tx = len({c.tx_hash for c in res.collections})
    n_topup_tx = len({c.tx_hash for c in res.topups})
    console.print(f"on-chain, blocks {res.first_block}..{res.last_block}: {len(res.batches)} batches committed "
                  f"({res.leaves_committed} leaves), {len(res.collections)} vouchers collected in {n_collect_tx} "
                  f"transactions ({fmt(sum(c.amount for c in res.collections), USD_DECIMALS)} hUSD), "
                  f"{len(res.topups)} lane top-ups in {n_topup_tx} allocate transactions "
                  f"({fmt(sum(c.amount for c in res.topups), USD_DECIMALS)} hUSD)")
    served = sum(p.cost for p in res.providers.values())
    collected = sum(c.amount for c in res.collections)
    if collected < served:
        console.print(f"not collected yet: {fmt(served - collected, USD_DECIMALS)} hUSD (providers collect once a "
                      f"payer owes them more than their threshold, or at once when the payer starts a thaw)")
    console.print(f"gas: {res.gas_total:,} for {len(res.gas_by_tx)} transactions = [bold]{res.gas_per_request:,.0f} "
                  f"gas per answered request[/] (a per-job request costs about 250,000)")
