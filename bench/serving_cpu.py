"""CPU time per request of the serving plane's processes, measured instead of wall-clock time
(other work on the machine makes latency noisy; a process's CPU time per request is not).

Brings up a devnet, the gateway (``python -m gateway run``) and one provider endpoint
(``python -m worker.serving``) as separate processes, as :mod:`bench.e2e` does, sends the same
MiniLM requests at the given concurrency, and reads each process's CPU time (``/proc``) before
and after: per process, its main thread (the event loop: HTTP, auth, routing, signatures,
checks, database) and its other threads (the model, the ledger writer, the chain poller). The
bench process's own CPU (the aiohttp clients and the in-process indexer) is printed too.

``--profile DIR`` runs the gateway and the provider under cProfile (main thread, its CPU time as the
clock) and writes
``gateway.prof`` / ``provider.prof`` there (their CPU figures then include the profiler's cost).
Prints a table and writes ``bench/results/serving_cpu.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "serving_cpu.json"
USD = 10**6
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> tuple[float, float]:
    """(main thread, other threads) CPU seconds of process ``pid`` so far."""
    main = other = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        s = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
        if int(tid) == pid:
            main += s
        else:
            other += s
    return main, other


def main() -> None:
    from bench.e2e import bench_stack, embeddings_client, open_serving_client, requests_for, wait_http

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="requests per concurrency")
    ap.add_argument("--concurrency", type=str, default="1,8", help="comma-separated concurrencies")
    ap.add_argument("--profile", type=Path, default=None, help="write cProfile stats of both processes here")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    ap.add_argument("--idle-s", type=float, default=5.0, help="seconds of no traffic to measure background CPU")
    args = ap.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    from deploy.devnet import free_port

    reqs = requests_for(args.requests)
    # SIGINT on the way out: uvicorn shuts down cleanly, so cProfile writes its stats
    with bench_stack("hearth-bench-cpu-", stop_signal=signal.SIGINT, stop_wait_s=30) as st:
        dn, indexer, procs = st.dn, st.indexer, st.procs

        def spawn(module: list[str], entry: str, env: dict[str, str], name: str) -> Path:
            cmd = [sys.executable, "-m", *module]
            if args.profile:  # imported, not run as __main__: pydantic resolves the settings' annotations
                mod, fn = entry.split(":")
                out = str(args.profile.resolve() / f"{name}.prof")
                cmd = [sys.executable, "-c", f"import cProfile, sys, time; from {mod} import {fn}; "
                       f"sys.argv = sys.argv[:1] + {module[1:]!r}; p = cProfile.Profile(time.thread_time); p.enable()\n"
                       f"try:\n    {fn}()\nfinally:\n    p.disable(); p.dump_stats({out!r})"]
            return st.spawn(cmd, env, name)

        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        gw_port, prov_port = free_port(), free_port()
        gw_log = spawn(["gateway", "run", "--port", str(gw_port), "--log-level", "warning"], "gateway.cli:main",
                       {"HEARTH_GATEWAY_RELAYER_KEY": dn.accounts["relayer"].key,
                        "HEARTH_GATEWAY_RATE_LIMIT_IP_PER_MIN": "1e12", "HEARTH_GATEWAY_PROVIDER_TIMEOUT_S": "120",
                        "HEARTH_GATEWAY_RATE_LIMIT_WALLET_PER_MIN": "1e12",
                        "HEARTH_GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{gw_port}"}, "gateway")
        prov_log = spawn(["worker.serving"], "worker.serving.__main__:main",
                         {"HEARTH_WORKER_KEY": dn.accounts["provider"].key, "HEARTH_SERVING_PORT": str(prov_port),
                          "HEARTH_SERVING_ANNOUNCE": "1", "HEARTH_SERVING_PRICE": "100",
                          "HEARTH_SERVING_REGION": "local", "HEARTH_SERVING_LOG_LEVEL": "WARNING"}, "provider")
        base = f"http://127.0.0.1:{gw_port}"
        wait_http(f"{base}/healthz", "gateway", gw_log)
        wait_http(f"http://127.0.0.1:{prov_port}/healthz", "provider", prov_log)

        api_key = open_serving_client(dn, base, indexer)

        async def run(c: int, batch: list[list[str]]) -> float:
            async with embeddings_client(base, api_key, c, 120) as post:
                todo = iter(batch)

                async def worker() -> None:
                    for texts in todo:
                        await post(texts, "serving")

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(c)))
                return time.perf_counter() - t0

        pids = {name: p.pid for name, p in procs.items()}
        asyncio.run(run(4, reqs[:20]))  # warm up: connections, routing, caches
        before = {n: cpu_s(pid) for n, pid in pids.items()}
        time.sleep(args.idle_s)  # what the background duties (pollers, committers) cost with no traffic
        after = {n: cpu_s(pid) for n, pid in pids.items()}
        idle = {n: round(1000 * (sum(after[n]) - sum(before[n])) / args.idle_s, 1) for n in pids}
        print(f"idle CPU ms per second: {idle}", flush=True)
        result: dict[str, Any] = {}
        for c in concurrencies:
            asyncio.run(run(4, reqs[:20]))  # warm up: connections, routing, caches
            before = {n: cpu_s(pid) for n, pid in pids.items()}
            me0 = time.process_time()
            wall = asyncio.run(run(c, reqs))
            me = time.process_time() - me0
            after = {n: cpu_s(pid) for n, pid in pids.items()}
            n = len(reqs)
            row: dict[str, Any] = {"requests": n, "requests_per_s": round(n / wall, 2)}
            for name in pids:
                m = 1000 * (after[name][0] - before[name][0]) / n
                o = 1000 * (after[name][1] - before[name][1]) / n
                row[name] = {"main_thread_ms": round(m, 2), "other_threads_ms": round(o, 2),
                             "total_ms": round(m + o, 2)}
            row["bench_process_ms"] = round(1000 * me / n, 2)
            result[str(c)] = row
            print(f"c={c}: {json.dumps(row)}", flush=True)

        print(f"\nidle CPU ms per second: {idle}")
        print(f"{'c':>3} {'process':<10}{'main ms/req':>13}{'other ms/req':>14}{'total ms/req':>14}")
        for conc, r in result.items():
            for name in pids:
                v = r[name]
                print(f"{conc:>3} {name:<10}{v['main_thread_ms']:>13}{v['other_threads_ms']:>14}{v['total_ms']:>14}")
            print(f"{conc:>3} {'bench':<10}{r['bench_process_ms']:>41}")
        out = {"cpu_ms_per_request": result, "idle_cpu_ms_per_s": idle, "profiled": bool(args.profile),
               "load_average_1m_at_end": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d")}
        if not args.no_write:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
