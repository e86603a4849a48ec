"""Is cheating unprofitable at the devnet's parameters? Expected profit per job of a cheating
provider (returns a made-up output without computing) and of an honest one, against the
verifiers' sampling rate and the slash.

    python bench/economics.py [--out bench/results/economics.json] [--jobs 200000]

The contracts' parameters are read from ``deploy.devnet`` (``DEVNET_PARAMS``, the price, the
providers' stake), never retyped. Model, per job of ``units`` units at the model's price, with
maxPayment = payment (the steady state the gas bench uses too):

* every other provider verifies, sampling each receipt independently with probability
  sampleRateBps / 10,000, so a wrong receipt is challenged with probability
  1 - (1 - s)^verifiers (a verifier that samples it always finds the mismatch: the outputs are
  bit-exact);
* a challenged wrong receipt loses before an honest committee majority: the client is refunded
  (the cheater is not paid) and the job's whole collateral is slashed;
* worst case for the protocol, the cheater's own sybil is one of the verifiers and challenges
  first whenever anyone would have, recovering the bounded challenger reward (and its bond);
* an honest provider is paid payment - fee and spends ``compute_cost`` per job; disputes
  against it are lost by the challenger (the honest provider even receives the bond's rest),
  so they only add to its profit and are left out.

Staking-token amounts are converted at ``--hst-price`` hUSD per HST (default 1). Expected
values are computed exactly and checked against a Monte Carlo run of ``--jobs`` jobs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from contracts.types import MarketParams  # noqa: E402
from deploy.devnet import DEFAULT_PRICE_PER_UNIT, DEVNET_PARAMS, HST, PROVIDER_STAKE, USD  # noqa: E402

BPS = 10_000
#: Devnet providers (provider, verifier, verifier2, cheater): a cheater faces the other three.
DEVNET_PROVIDERS = 4
UNITS = 1_000  # tokens of a typical short embedding request


@dataclass(frozen=True)
class Case:
    sample_rate_bps: int
    collateral_scale: float
    detection: float
    payment_usd: float
    slash_usd: float
    cheating_profit: float
    cheating_profit_self_challenge: float
    honest_profit: float


def job_terms(p: MarketParams, units: int) -> tuple[int, int, int]:
    """(payment, fee, collateral) in wei for a job of ``units`` at the devnet price."""
    payment = units * DEFAULT_PRICE_PER_UNIT
    fee = payment * p.fee_bps // BPS
    return payment, fee, p.collateral_for(payment)


def expected(p: MarketParams, units: int, verifiers: int, hst_price: float, compute_cost: float,
             collateral_scale: float = 1.0) -> Case:
    payment, fee, collateral = job_terms(p, units)
    slash = collateral * collateral_scale
    s = p.sample_rate_bps / BPS
    q = 1 - (1 - s) ** verifiers
    paid = (payment - fee) / USD
    slash_usd = slash / HST * hst_price
    reward = min(slash * p.challenger_reward_bps / BPS, p.max_challenger_reward) / HST * hst_price
    cheat = (1 - q) * paid - q * slash_usd
    return Case(
        sample_rate_bps=p.sample_rate_bps, collateral_scale=collateral_scale, detection=q,
        payment_usd=payment / USD, slash_usd=slash_usd, cheating_profit=cheat,
        cheating_profit_self_challenge=cheat + q * reward,
        honest_profit=paid - compute_cost * payment / USD,
    )


def monte_carlo(p: MarketParams, units: int, verifiers: int, hst_price: float, jobs: int, seed: int) -> float:
    """Average profit per job of a self-challenging cheater over ``jobs`` simulated jobs."""
    rng = random.Random(seed)
    payment, fee, collateral = job_terms(p, units)
    s = p.sample_rate_bps / BPS
    reward = min(collateral * p.challenger_reward_bps // BPS, p.max_challenger_reward)
    total = 0.0
    for _ in range(jobs):
        caught = any(rng.random() < s for _ in range(verifiers))
        if caught:
            total -= (collateral - reward) / HST * hst_price
        else:
            total += (payment - fee) / USD
    return total / jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "economics.json")
    ap.add_argument("--jobs", type=int, default=200_000, help="Monte Carlo jobs")
    ap.add_argument("--hst-price", type=float, default=1.0, help="hUSD per HST")
    ap.add_argument("--compute-cost", type=float, default=0.5,
                    help="an honest provider's compute cost as a fraction of the payment")
    ap.add_argument("--units", type=int, default=UNITS)
    args = ap.parse_args()
    p = DEVNET_PARAMS
    verifiers = DEVNET_PROVIDERS - 1
    console = Console()

    base = expected(p, args.units, verifiers, args.hst_price, args.compute_cost)
    mc = monte_carlo(p, args.units, verifiers, args.hst_price, args.jobs, seed=8)

    grid: list[Case] = []
    for rate in (10, 50, 100, 250, 500, 1000, 2000):
        for scale in (0.001, 0.01, 0.1, 1.0):
            grid.append(expected(MarketParams(**{**asdict(p), "sample_rate_bps": rate}), args.units, verifiers,
                                 args.hst_price, args.compute_cost, scale))
    t = Table(title=f"Expected profit per job (hUSD), {args.units} units at {DEFAULT_PRICE_PER_UNIT} wei/unit, "
                    f"{verifiers} verifiers, 1 HST = {args.hst_price} hUSD")
    for col in ("sample rate", "slash x", "P(caught)", "slash hUSD", "cheater", "cheater+sybil", "honest"):
        t.add_column(col, justify="right")
    for c in grid:
        style = "bold" if (c.sample_rate_bps, c.collateral_scale) == (p.sample_rate_bps, 1.0) else ""
        t.add_row(f"{c.sample_rate_bps / 100:.1f}%", f"{c.collateral_scale:g}", f"{c.detection:.3f}",
                  f"{c.slash_usd:.4f}",
                  f"[{'red' if c.cheating_profit > 0 else 'green'}]{c.cheating_profit:+.5f}[/]",
                  f"[{'red' if c.cheating_profit_self_challenge > 0 else 'green'}]"
                  f"{c.cheating_profit_self_challenge:+.5f}[/]",
                  f"{c.honest_profit:+.5f}", style=style)
    console.print(t)
    # Break-even detection probability for the self-challenging cheater at devnet terms.
    payment, fee, collateral = job_terms(p, args.units)
    reward = min(collateral * p.challenger_reward_bps // BPS, p.max_challenger_reward)
    gain = (payment - fee) / USD
    loss = (collateral - reward) / HST * args.hst_price
    breakeven = gain / (gain + loss)
    console.print(f"devnet: P(caught) = {base.detection:.4f}; cheating pays only below P(caught) = {breakeven:.6f}")
    console.print(f"Monte Carlo ({args.jobs:,} jobs): self-challenging cheater {mc:+.5f} hUSD/job "
                  f"(exact {base.cheating_profit_self_challenge:+.5f})")

    res: dict[str, Any] = {
        "command": shlex.join(["python", "bench/economics.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "assumptions": {
            "hst_price_usd": args.hst_price, "honest_compute_cost_fraction": args.compute_cost,
            "units": args.units, "price_per_unit_wei": DEFAULT_PRICE_PER_UNIT, "verifiers": verifiers,
            "provider_stake_hst": PROVIDER_STAKE / HST,
        },
        "devnet_params": {k: v for k, v in asdict(p).items() if k != "treasury"},
        "detection_probability": base.detection,
        "breakeven_detection_probability": breakeven,
        "cheating_expected_profit_per_job": base.cheating_profit,
        "cheating_with_own_sybil_challenger_expected_profit_per_job": base.cheating_profit_self_challenge,
        "cheating_monte_carlo_profit_per_job": mc,
        "honest_expected_profit_per_job": base.honest_profit,
        "unit": "hUSD per job",
        "grid": [asdict(c) for c in grid],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    if not (res["cheating_expected_profit_per_job"] < 0 < res["honest_expected_profit_per_job"]):
        console.print("[red]at devnet parameters cheating pays or honesty does not[/]")
        sys.exit(1)


if __name__ == "__main__":
    main()
