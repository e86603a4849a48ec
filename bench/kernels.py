"""Throughput of the MiniLM runtimes: sentences/s and tokens/s per batch size and length.

    python bench/kernels.py [--reps 3] [--no-compile] [--out bench/results]

Implementations measured, where the machine has what they need:

* `hearth-triton` (GPU): the batch-invariant Triton kernels, fixed tiles (fp32, fp16, bf16);
* `hearth-triton-autotuned` (GPU): the same with the GEMM autotuned per (M, N, K), which is
  not batch-invariant; `fixed / autotuned` is the cost of invariance;
* `hearth-torch`: the batch-invariant PyTorch path, eager;
* `hearth-torch-compile`: that path with its fixed-shape row blocks under `torch.compile`
  (recorded as skipped, with the reason, when compilation fails);
* `sentence-transformers`: the reference, fp32 (and fp16 on GPU).

Every input of a (batch, seq) cell tokenizes to exactly `seq` tokens, so padded and real
tokens coincide. Timings are end to end from Python strings to a float32 numpy array
(tokenization included) for every implementation. Rows go to
`bench/results/kernels-<device>.json` (device: cpu, h100, h200 or the GPU's name) as a list
of objects with `impl, dtype, batch, seq, sentences_per_s, tokens_per_s`, plus
`ratio_vs_st` (throughput over sentence-transformers fp32 of the same cell; fp16 rows over
sentence-transformers fp16 where measured), `ratio_vs_autotuned` on fixed-tile Triton rows,
`reps`, `device`, `threads` (torch intra-op threads), and `skipped` (the reason) on rows that
could not run. On a shared CPU, `--threads 1` gives the stable numbers: with several threads
any other process on the cores stalls every OpenMP barrier, and the batch-invariant torch path
(many fixed-size ops) suffers from that far more than the reference (few large ops).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from worker.model import Encoder  # noqa: E402
from worker.model.packing import pack  # noqa: E402
from worker.model.torch_path import TorchForward  # noqa: E402
from worker.model.weights import MiniLMTokenizer, load_weights, model_dir, torch_dtype  # noqa: E402

logger = logging.getLogger("bench.kernels")

BATCHES = (1, 32, 128, 256)
SEQS = (32, 128)
ST = "sentence-transformers"
EncodeFn = Callable[[list[str]], Any]

_WORDS_TEXT = (
    "the of and to in is was for on that with by as at from it be this are have an they which "
    "one you were all we there been has when who will more no if out so said what up its "
    "about than into them can only other new some could time these two may then do first any "
    "my now such like our over man me even most made after also did many before must through "
    "back years where much your way well down should because each just those people how too "
    "little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come "
    "since against go came right used take three"
)
_WORDS = _WORDS_TEXT.split()


@dataclass
class Row:
    """One measured (or skipped) cell."""

    impl: str
    dtype: str
    batch: int
    seq: int
    sentences_per_s: float | None
    tokens_per_s: float | None
    reps: int = 0
    device: str = "cpu"
    threads: int = 1
    ratio_vs_st: float | None = None
    ratio_vs_autotuned: float | None = None
    skipped: str | None = None


def device_label() -> str:
    """`cpu`, `h100`, `h200`, or the GPU's name in lower case without spaces."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name().lower()
    for known in ("h100", "h200", "a100", "l40s", "l4"):
        if known in name:
            return known
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def make_texts(tokenizer: MiniLMTokenizer, batch: int, seq: int, seed: int = 0) -> list[str]:
    """`batch` texts of single-token words that each tokenize to exactly `seq` tokens."""
    words = [w for w in _WORDS if len(tokenizer.encode_ids([w])[0]) == 3]
    rng = random.Random(seed * 1000 + seq)
    texts = [" ".join(rng.choice(words) for _ in range(seq - 2)) for _ in range(batch)]
    counts = set(tokenizer.count_tokens(texts))
    if counts != {seq}:
        raise RuntimeError(f"texts tokenize to {counts}, wanted {seq}")
    return texts


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn: EncodeFn, texts: list[str]) -> float:
    _sync()
    t0 = time.perf_counter()
    fn(texts)
    _sync()
    return time.perf_counter() - t0


def _encoder_fn(backend: str, dtype: str, device: str) -> EncodeFn:
    enc = Encoder(backend=backend, dtype=dtype, device=device)  # type: ignore[arg-type]
    return enc.encode


def _triton_autotuned_fn(dtype: str, device: str) -> EncodeFn:
    from worker.kernels import TritonForward

    fwd = TritonForward(load_weights(torch_dtype(dtype), device), autotuned_gemm=True)
    tok = MiniLMTokenizer()
    return lambda texts: fwd(pack(tok.encode_ids(texts))).cpu().numpy()


def _compiled_fn(dtype: str, device: str) -> EncodeFn:
    fwd = TorchForward(load_weights(torch_dtype(dtype), device), compile=True)
    tok = MiniLMTokenizer()
    fn: EncodeFn = lambda texts: fwd(pack(tok.encode_ids(texts))).cpu().numpy()  # noqa: E731
    fn(["warm up the compiler"])  # compile now, so failures are caught here
    return fn


def _st_fn(dtype: str, device: str) -> EncodeFn:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device=device)
    if dtype == "fp16":
        model = model.half()

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=len(texts), convert_to_numpy=True)

    return encode


def plan(device: str, compile_on: bool) -> list[tuple[str, str, Callable[[], EncodeFn]]]:
    """(impl, dtype, factory) for every implementation this machine can run."""
    gpu = device != "cpu"
    dev = "cuda" if gpu else "cpu"
    impls: list[tuple[str, str, Callable[[], EncodeFn]]] = [
        (ST, "fp32", functools.partial(_st_fn, "fp32", dev)),
        ("hearth-torch", "fp32", functools.partial(_encoder_fn, "torch", "fp32", dev)),
    ]
    if compile_on:
        impls.append(("hearth-torch-compile", "fp32", functools.partial(_compiled_fn, "fp32", dev)))
    if gpu:
        impls += [
            (ST, "fp16", functools.partial(_st_fn, "fp16", dev)),
            ("hearth-torch", "fp16", functools.partial(_encoder_fn, "torch", "fp16", dev)),
        ]
        if compile_on:
            impls.append(("hearth-torch-compile", "fp16", functools.partial(_compiled_fn, "fp16", dev)))
        for dt in ("fp32", "fp16", "bf16"):
            impls.append(("hearth-triton", dt, functools.partial(_encoder_fn, "triton", dt, dev)))
            impls.append(("hearth-triton-autotuned", dt, functools.partial(_triton_autotuned_fn, dt, dev)))
    return impls


def run(reps: int, budget_s: float, compile_on: bool, console: Console, deadline_s: float = 1e9) -> list[Row]:
    """Measure every implementation on every (batch, seq) cell.

    The implementations take turns within each cell, rep by rep, and each keeps its best
    time: on a shared machine interference only ever adds time, and taking turns spreads it
    over all of them, which keeps the ratios fair. Past `deadline_s` each cell runs once.
    """
    t_start = time.perf_counter()
    device = device_label()
    threads = torch.get_num_threads()
    tokenizer = MiniLMTokenizer()
    cells = [(b, s, make_texts(tokenizer, b, s)) for s in SEQS for b in BATCHES]
    rows: list[Row] = []
    ready: list[tuple[str, str, EncodeFn]] = []
    for impl, dtype, factory in plan(device, compile_on):
        console.print(f"loading [bold]{impl}[/bold] {dtype}")
        try:
            fn = factory()
            fn(make_texts(tokenizer, 2, 16))
        except Exception as exc:  # recorded, the bench goes on
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            console.print(f"  skipped: {reason}")
            rows += [
                Row(impl, dtype, b, s, None, None, device=device, threads=threads, skipped=reason) for b, s, _ in cells
            ]
            continue
        ready.append((impl, dtype, fn))
    for b, s, texts in cells:
        warm = texts if b * s <= 8192 else texts[: max(1, 8192 // s)]
        best = [float("inf")] * len(ready)
        runs = [0] * len(ready)
        start = time.perf_counter()
        cell_reps = reps if start - t_start < deadline_s else 1
        for _, _, fn in ready:
            fn(warm)
        while min(runs, default=cell_reps) < cell_reps and (not any(runs) or time.perf_counter() - start < budget_s):
            for i, (_, _, fn) in enumerate(ready):
                best[i] = min(best[i], _timed(fn, texts))
                runs[i] += 1
        for (impl, dtype, _), sec, n in zip(ready, best, runs, strict=True):
            rows.append(Row(impl, dtype, b, s, b / sec, b * s / sec, reps=n, device=device, threads=threads))
            console.print(f"  {impl:<24} {dtype} batch {b:>3} seq {s:>3}: {b / sec:9.1f} sentences/s")
    _add_ratios(rows)
    return rows


def _add_ratios(rows: Sequence[Row]) -> None:
    by = {(r.impl, r.dtype, r.batch, r.seq): r for r in rows}
    for r in rows:
        if r.sentences_per_s is None:
            continue
        ref = by.get((ST, r.dtype, r.batch, r.seq))
        if ref is None or ref.sentences_per_s is None:
            ref = by.get((ST, "fp32", r.batch, r.seq))
        if ref is not None and ref.sentences_per_s:
            r.ratio_vs_st = r.sentences_per_s / ref.sentences_per_s
        if r.impl == "hearth-triton":
            tuned = by.get(("hearth-triton-autotuned", r.dtype, r.batch, r.seq))
            if tuned is not None and tuned.sentences_per_s:
                r.ratio_vs_autotuned = r.sentences_per_s / tuned.sentences_per_s


def _round(v: Any) -> Any:
    return float(f"{v:.4g}") if isinstance(v, float) else v


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def print_table(rows: Sequence[Row], console: Console) -> None:
    """Rich table of the rows."""
    table = Table(title=f"MiniLM-L6 throughput on {rows[0].device if rows else '?'}")
    for col in ("impl", "dtype", "batch", "seq", "sentences/s", "tokens/s", "vs ST", "vs autotuned"):
        table.add_column(col, justify="left" if col in ("impl", "dtype") else "right")
    for r in rows:
        table.add_row(
            r.impl,
            r.dtype,
            str(r.batch),
            str(r.seq),
            _fmt(r.sentences_per_s) if r.skipped is None else "skipped",
            _fmt(r.tokens_per_s, 0),
            _fmt(r.ratio_vs_st, 2),
            _fmt(r.ratio_vs_autotuned, 2),
        )
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="timed calls per cell (best of)")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per cell (all impls) before stopping reps")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--deadline", type=float, default=180.0, help="seconds after which every remaining cell runs once"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=max(Console().width, 132))
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.reps, args.budget, not args.no_compile, console, args.deadline)
    print_table(rows, console)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"kernels-{device_label()}.json"
    data = [{k: _round(v) for k, v in asdict(r).items() if v is not None or k in _REQUIRED} for r in rows]
    path.write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")
    return 0


_REQUIRED = {"impl", "dtype", "batch", "seq", "sentences_per_s", "tokens_per_s"}

if __name__ == "__main__":
    raise SystemExit(main())
