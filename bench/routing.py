"""Routing quality: least-load vs roundrobin vs random on a heterogeneous fleet, open-loop load.

The fleet is the demo's (src/vllm_router/demo.py): three simulated engines of different sizes
and speeds, in one separate process, with the router (`vllm-router run`, a servers.toml that
gives each server max_concurrent_requests = its max_seqs) in front.

Capacity. Every request asks for T tokens and streams. An engine with prefill time ttft and
token delay d holds a generation slot for s = ttft + (T - 1) * d seconds (token i leaves at
ttft + i * d after the request got its slot), and has max_seqs slots, so it completes at most
max_seqs / s requests per second. The fleet's capacity is the sum over the engines:

    C = sum_j max_seqs_j / (ttft_j + (T - 1) * d_j)        [requests/s]

Load. An open-loop client (asyncio, one connection per request) sends requests at exponential
inter-arrival times of mean 1 / (f * C) for f = 50 %, 80 %, 95 %, during `--window` seconds,
whatever the answers do (not closed-loop: slow answers do not slow the arrivals). The arrival
times come from a fixed seed per load level, so the three policies see the same sequence.
Latency counts from the scheduled arrival: end-to-end = the [DONE] event, TTFT = the first
event. Requests still unanswered `--drain` seconds after the last arrival are cut off and count
with their elapsed time as a lower bound (the table marks such figures with >=).

    python bench/routing.py [--quick] [--window S] [--drain S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import statistics
import time
from types import SimpleNamespace
from typing import Any

from common import (Children, core_module_stamp, http_get, install_sigterm, log, percentile, raise_nofile, save_json,
                    start_engines, start_router, temp_dir, wait_healthy)
from sseclient import StreamProtocol, StreamResult, chat_request


def _demo_fleet() -> tuple[list[SimpleNamespace], str]:
    """The demo's engines, read in a short-lived subprocess: this process never loads the
    compiled module, so a rebuild that rewrites it during a run cannot crash the orchestrator."""
    code = ("import json; from vllm_router.demo import DEMO_ENGINES as E, DEMO_MODEL as M; "
            "print(json.dumps({'model': M, 'engines': [e.__dict__ for e in E]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return [SimpleNamespace(**e) for e in data["engines"]], data["model"]


DEMO_ENGINES, DEMO_MODEL = _demo_fleet()

TOKENS = 32
POLICIES = ("least-load", "roundrobin", "random")
LOADS = (0.5, 0.8, 0.95)


def fleet() -> list[dict[str, Any]]:
    return [{"name": e.name, "max_seqs": e.max_seqs, "ttft": e.ttft, "token_delay": e.token_delay,
             "service_s": e.ttft + (TOKENS - 1) * e.token_delay,
             "capacity_rps": e.max_seqs / (e.ttft + (TOKENS - 1) * e.token_delay)} for e in DEMO_ENGINES]


def capacity() -> float:
    return sum(e["capacity_rps"] for e in fleet())


def arrivals(rate: float, window: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= window:
            return out
        out.append(t)


async def one_request(port: int, request: bytes, at: float, result: StreamResult, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future = loop.create_future()
    transport = None
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: StreamProtocol(request, result, finished), "127.0.0.1", port),
            max(0.1, deadline - time.monotonic()))
        await asyncio.wait_for(finished, max(0.1, deadline - time.monotonic()))
    except (OSError, asyncio.TimeoutError) as e:
        result.error = result.error or f"cut off: {e!r}"
        if transport is not None:
            transport.close()


async def open_loop(port: int, times: list[float], drain: float) -> tuple[list[StreamResult], list[float], float]:
    body = {"model": DEMO_MODEL, "stream": True, "max_tokens": TOKENS,
            "messages": [{"role": "user", "content": "Write a haiku about routers."}]}
    request = chat_request("127.0.0.1", port, body)
    results = [StreamResult() for _ in times]
    start = time.monotonic() + 0.2
    scheduled = [start + t for t in times]
    deadline = start + (times[-1] if times else 0) + drain
    tasks = []
    for at, result in zip(scheduled, results):
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_request(port, request, at, result, deadline)))
    await asyncio.gather(*tasks)
    return results, scheduled, deadline


def summarise(results: list[StreamResult], scheduled: list[float], deadline: float) -> dict[str, Any]:
    e2e: list[float] = []
    ttft: list[float] = []
    cut = 0
    for r, at in zip(results, scheduled):
        if r.done and r.status == 200 and r.events:
            e2e.append(r.events[-1] - at)
            ttft.append(r.events[0] - at)
        else:
            cut += 1
            e2e.append(deadline - at)  # a lower bound: still unanswered at the cut-off
            ttft.append((r.events[0] - at) if r.events else deadline - at)
    n = len(results)
    return {
        "sent": n,
        "completed": n - cut,
        "cut_off": cut,
        # With cut-off requests the mean is a lower bound, and so is the p99 when more than 1 % were cut.
        "mean_is_lower_bound": cut > 0,
        "p99_is_lower_bound": cut > 0.01 * n,
        "e2e_s": {"mean": statistics.fmean(e2e) if e2e else float("nan"), "p50": percentile(e2e, 50),
                  "p99": percentile(e2e, 99)},
        "ttft_s": {"mean": statistics.fmean(ttft) if ttft else float("nan"), "p50": percentile(ttft, 50),
                   "p99": percentile(ttft, 99)},
    }


def per_backend(port: int, urls: dict[str, str]) -> dict[str, int]:
    """Requests each engine got, from the router's own counters."""
    out = {name: 0 for name in urls.values()}
    try:
        _, body = http_get(port, "/metrics")
    except OSError:
        return out
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("vllm_router_requests_total{"):
            for url, name in urls.items():
                if f'backend="{url}"' in line:
                    out[name] += int(float(line.rsplit(" ", 1)[1]))
    return out


def servers_toml(ports: list[int]) -> str:
    lines = ["[servers]", "servers = ["]
    for port, e in zip(ports, DEMO_ENGINES):
        lines.append(f'  {{ url = "http://127.0.0.1:{port}", max_concurrent_requests = {e.max_seqs}, '
                     f'models = ["{DEMO_MODEL}"] }},')
    lines += ["]", "", "[config]", "engine_stats_interval = 1", ""]
    return "\n".join(lines)


def one_run(policy: str, load: float, window: float, drain: float, seed: int) -> dict[str, Any]:
    rate = load * capacity()
    times = arrivals(rate, window, seed)
    with temp_dir("routing") as tmp, Children() as children:
        specs = [{"model": DEMO_MODEL, "ttft": e.ttft, "token_delay": e.token_delay, "max_seqs": e.max_seqs,
                  "max_tokens": TOKENS, "threads": 1} for e in DEMO_ENGINES]
        _, ports = start_engines(children, tmp, specs)
        config = tmp / "servers.toml"
        config.write_text(servers_toml(ports))
        router, port = start_router(children, tmp, threads=1, config=config, routing=policy)
        wait_healthy(port, len(ports))
        time.sleep(1.2)  # one scrape of every engine's /metrics
        t0 = time.monotonic()
        stamp = core_module_stamp()
        results, scheduled, deadline = asyncio.run(open_loop(port, times, drain))
        wall = time.monotonic() - t0
        urls = {f"http://127.0.0.1:{p}": e.name for p, e in zip(ports, DEMO_ENGINES)}
        shares = per_backend(port, urls)
        died = router.poll() is not None
        code = router.returncode
        replaced = core_module_stamp() != stamp
    row = {"policy": policy, "load": load, "rate_rps": rate, "window_s": window, "wall_s": wall, "seed": seed,
           "per_engine": shares, "router_died": died, "router_exit": code,
           "module_replaced": replaced}
    row.update(summarise(results, scheduled, deadline))
    return row


def run(quick: bool = False, window: float | None = None, drain: float | None = None) -> dict[str, Any]:
    raise_nofile()
    window = window or (6.0 if quick else 20.0)
    drain = drain or (6.0 if quick else 8.0)
    loads = (0.8,) if quick else LOADS
    rows = []
    for load in loads:
        seed = int(load * 1000)
        for policy in POLICIES:
            row = one_run(policy, load, window, drain, seed)
            lb = ">=" if row["p99_is_lower_bound"] else ""
            log(f"routing: {policy:<10} at {load:.0%} ({row['rate_rps']:.1f} req/s): {row['completed']}/{row['sent']} "
                f"done; e2e mean {row['e2e_s']['mean']:.2f} s p99 {lb}{row['e2e_s']['p99']:.2f} s; "
                f"TTFT p99 {row['ttft_s']['p99']:.2f} s; per engine {row['per_engine']}")
            rows.append(row)
    return {"params": {"tokens": TOKENS, "window_s": window, "drain_s": drain, "fleet": fleet(),
                       "capacity_rps": capacity(), "loads": list(loads), "policies": list(POLICIES)},
            "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description="Least-load vs roundrobin vs random under open-loop load.")
    parser.add_argument("--quick", action="store_true", help="80 % load only, short runs")
    parser.add_argument("--window", type=float, help="seconds of arrivals per run")
    parser.add_argument("--drain", type=float, help="seconds allowed after the last arrival")
    args = parser.parse_args()
    install_sigterm()
    data = run(args.quick, args.window, args.drain)
    path = save_json("routing-quick" if args.quick else "routing", data)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
