"""Generation throughput of SmolLM2-135M-Instruct: our engine against transformers `generate`.

    python bench/llm.py [--prompt-tokens 128] [--gen-tokens 128] [--concurrency 1,8,32,64]
                        [--threads 1] [--no-transformers] [--no-fast] [--out bench/results]

Every request has a prompt of exactly `--prompt-tokens` tokens (English text through the GGUF
tokenizer, cut to length) and generates exactly `--gen-tokens` tokens (end-of-sequence
ignored; transformers gets `min_new_tokens` for the same effect). At concurrency `c`, `c`
requests are submitted at once.

* `hearth`: our engine (`worker.model.llm`), batch-invariant PyTorch path on CPU, continuous
  batching with prefill chunks of 32 and a 512-token step budget;
* `hearth-fast`: the same engine with `invariant=False` (no row-block padding; one SDPA per
  sequence chunk): `hearth / hearth-fast` is the cost of batch invariance;
* `transformers`: `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` (fp32
  dequantised weights, SDPA attention), `generate(do_sample=False)` on the batch of `c` prompts.

Decode tokens/s: for our engine, the tokens sampled by steps in which every request was
decoding (no prefill) over the wall time of those steps; for transformers,
`c * (G - 1) / (t(G) - t(1))` where `t(n)` is the time of `generate` with `n` new tokens. Time to
first token: for our engine the mean over requests of submission to first token; for
transformers `t(1)`. Writes `bench/results/llm-<device>.json` with `decode_tokens_per_s` =
`{"hearth": {"1": ..}, "transformers": {..}, "hearth-fast": {..}}`, `ttft_s` in the same shape,
the configuration and the ratios the issue asks for. On a shared CPU use `--threads 1` (see
bench/kernels.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from worker.model.llm import (  # noqa: E402
    ChatTokenizer,
    Engine,
    LlamaForward,
    LlamaWeights,
    SamplingParams,
    gguf_path,
    load_weights,
)

logger = logging.getLogger("bench.llm")

_TEXT = (
    "The history of computing is a story of people who wanted machines to do arithmetic for "
    "them, and of the long road from mechanical calculators to electronic computers. Early "
    "devices such as the abacus helped merchants keep accounts, while later inventors built "
    "gears and levers that could add and multiply. In the nineteenth century Charles Babbage "
    "designed an analytical engine that could be programmed with punched cards, and Ada "
    "Lovelace wrote what many call the first program for it. The twentieth century brought "
    "vacuum tubes, transistors and integrated circuits, each making computers smaller, faster "
    "and cheaper. Today a phone in a pocket holds more computing power than the machines that "
    "sent people to the moon, and networks connect billions of them into a single system that "
    "anyone can use to learn, trade, talk and build. "
)


def device_label() -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        for known in ("h100", "h200", "a100", "l4"):
            if known in name:
                return known
        return name.replace(" ", "-")
    return "cpu"


def make_prompts(tokenizer: ChatTokenizer, n: int, length: int) -> list[list[int]]:
    """`n` distinct prompts of exactly `length` tokens."""
    ids: list[int] = []
    while len(ids) < 7 * n + length:
        ids = tokenizer.encode(_TEXT * (1 + len(ids) // 50 + (7 * n + length) // 50))
    prompts = [ids[i * 7 : i * 7 + length] for i in range(n)]
    assert all(len(p) == length for p in prompts)
    return prompts


def bench_engine(
    weights: LlamaWeights, prompts: list[list[int]], gen: int, *, invariant: bool
) -> tuple[float, float, float]:
    """(decode tokens/s, mean time to first token, total seconds) for one concurrency."""
    c = len(prompts)
    engine = Engine(
        LlamaForward(weights, invariant=invariant),
        num_pages=c * (-(-(len(prompts[0]) + gen) // 16)),
        max_running=c,
        max_batch_tokens=512,
        prefill_chunk=32,
    )
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        engine.add(str(i), p, SamplingParams(max_tokens=gen, temperature=0.0, ignore_eos=True))
    first: dict[str, float] = {}
    decode_tokens = 0
    decode_s = 0.0
    while engine.has_work:
        all_decoding = not engine._waiting and all(s.decoding for s in engine._running)  # noqa: SLF001
        ts = time.perf_counter()
        events = engine.step()
        te = time.perf_counter()
        for ev in events:
            first.setdefault(ev.request_id, te - t0)
        if all_decoding:
            decode_tokens += len(events)
            decode_s += te - ts
    total = time.perf_counter() - t0
    return decode_tokens / decode_s, sum(first.values()) / len(first), total


def bench_transformers(model: Any, prompts: list[list[int]], gen: int) -> tuple[float, float, float]:
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=2
            )
        assert out.shape == (len(prompts), ids.shape[1] + n)
        return time.perf_counter() - t0

    t1 = timed(1)
    tg = timed(gen)
    return len(prompts) * (gen - 1) / (tg - t1), t1, tg


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--concurrency", default="1,8,32,64", help="comma-separated request counts")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--no-fast", action="store_true", help="skip the non-invariant engine")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [int(x) for x in args.concurrency.split(",")]
    load_before = os.getloadavg()
    console = Console()
    weights = load_weights()
    tokenizer = ChatTokenizer.from_gguf()
    prompts = make_prompts(tokenizer, max(levels), args.prompt_tokens)
    impls = ["hearth"] + ([] if args.no_fast else ["hearth-fast"]) + ([] if args.no_transformers else ["transformers"])
    hf: Any = None
    if "transformers" in impls:
        import transformers

        path = gguf_path()
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        hf.eval()
    decode: dict[str, dict[str, float]] = {i: {} for i in impls}
    ttft: dict[str, dict[str, float]] = {i: {} for i in impls}
    for c in levels:
        batch = prompts[:c]
        for impl in impls:
            if impl == "transformers":
                tps, first, total = bench_transformers(hf, batch, args.gen_tokens)
            else:
                tps, first, total = bench_engine(weights, batch, args.gen_tokens, invariant=impl == "hearth")
            decode[impl][str(c)] = round(tps, 2)
            ttft[impl][str(c)] = round(first, 3)
            console.print(f"c={c:>3} {impl:<13} decode {tps:8.1f} tok/s  ttft {first:7.3f}s  total {total:7.1f}s")
    table = Table(title=f"SmolLM2 decode tokens/s ({device_label()}, {torch.get_num_threads()} threads)")
    table.add_column("concurrency", justify="right")
    for impl in impls:
        table.add_column(impl, justify="right")
        table.add_column(f"{impl} TTFT s", justify="right")
    for c in levels:
        cells = []
        for impl in impls:
            cells += [f"{decode[impl][str(c)]:.1f}", f"{ttft[impl][str(c)]:.3f}"]
        table.add_row(str(c), *cells)
    console.print(table)
    ratios: dict[str, float] = {}
    h = decode["hearth"]
    if "transformers" in decode and "1" in h:
        ratios["hearth_c1_over_transformers_c1"] = round(h["1"] / decode["transformers"]["1"], 3)
    if "1" in h and "32" in h:
        ratios["hearth_c32_over_hearth_c1"] = round(h["32"] / h["1"], 3)
    if "hearth-fast" in decode:
        for c in levels:
            ratios[f"invariance_cost_c{c}"] = round(decode["hearth-fast"][str(c)] / h[str(c)], 3)
    console.print(ratios)
    data = {
        "device": device_label(),
        "threads": torch.get_num_threads(),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "concurrency": levels,
        "decode_tokens_per_s": decode,
        "ttft_s": ttft,
        "ratios": ratios,
        "load_average_1_5_15min": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
        },
        "notes": "invariance_cost_cN = hearth-fast / hearth decode tokens/s at concurrency N",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"llm-{device_label()}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
