"""Soak: at least 1,000,000 requests through the router, its RSS sampled all along.

Backend: nginx with the fixed chat completion (bench/nginx.py); load: wrk with bench/chat.lua at
64 connections; the router with --threads = cores, as its own process. wrk has no request-count
option, so the duration is computed from a warm-up's rate (with a margin) and more runs follow
until the router's own counter (`vllm_router_requests_total` on its /metrics) shows the target
was passed. A thread samples the router's VmRSS and that counter every second.

"RSS at start" is taken after the warm-up (pools, buffers and allocator arenas in use), "at end"
from the last sample under load. Flat means: end - start <= max(5 MB, 5 % of start).

    python bench/soak.py            # 1,000,000 requests
    python bench/soak.py --quick    # 50,000 requests
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from typing import Any

from common import (CORES, Children, core_module_stamp, free_port, http_get, install_sigterm, log, rss_kb, run_wrk, save_json,
                    start_router, temp_dir, wait_healthy)
from nginx import MODEL, backend_conf, start_nginx

CONNECTIONS = 64
MAX_SECONDS = 300  # a bound on the whole soak, whatever the rate


def router_requests(port: int) -> int:
    """The router's count of proxied requests (every backend, model and status)."""
    try:
        status, body = http_get(port, "/metrics")
    except OSError:
        return -1
    if status != 200:
        return -1
    total = 0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("vllm_router_requests_total"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int, port: int, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.port, self.every = pid, port, every
        self.samples: list[dict[str, float]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.is_set():
            rss = rss_kb(self.pid)
            if rss:
                self.samples.append({"t": time.monotonic() - self.t0, "rss_mb": rss / 1024,
                                     "requests": router_requests(self.port)})
            self.stop_event.wait(self.every)


def run(quick: bool = False, target: int | None = None) -> dict[str, Any]:
    target = target or (50_000 if quick else 1_000_000)
    threads = CORES
    with temp_dir("soak") as tmp, Children() as children:
        bport = free_port()
        start_nginx(children, tmp / "backend", backend_conf(tmp / "backend", bport), bport)
        router, port = start_router(children, tmp, threads=threads, backends=[f"http://127.0.0.1:{bport}"],
                                    models=[MODEL])
        wait_healthy(port, 1)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        idle_mb = rss_kb(router.pid) / 1024
        warm = run_wrk(url, connections=CONNECTIONS, duration=3, threads=min(2, CORES))
        time.sleep(0.5)
        start_mb = rss_kb(router.pid) / 1024
        start_count = router_requests(port)
        rate = max(warm["rps"], 1000.0)
        log(f"soak: warm-up {warm['rps']:.0f} rps; RSS idle {idle_mb:.1f} MB, after warm-up {start_mb:.1f} MB")

        stamp = core_module_stamp()
        sampler = Sampler(router.pid, port)
        sampler.start()
        runs = []
        t0 = time.monotonic()
        died = False
        try:
            while True:
                done = router_requests(port) - start_count
                if done >= target or router.poll() is not None:
                    break
                left_time = MAX_SECONDS - (time.monotonic() - t0)
                if left_time < 2:
                    log("soak: time bound reached before the target")
                    break
                seconds = min(left_time, max(2, math.ceil(1.1 * (target - done) / rate) + 1))
                log(f"soak: {done:,} done, wrk for {seconds:.0f} s more")
                r = run_wrk(url, connections=CONNECTIONS, duration=seconds, threads=min(2, CORES))
                rate = max(r["rps"], 1000.0)
                runs.append({k: r[k] for k in ("requests", "rps", "errors", "errors_total", "latency_us")})
                time.sleep(0.5)
        finally:
            sampler.stop_event.set()
            sampler.join()
        wall = time.monotonic() - t0
        if router.poll() is not None:
            died = True
            log(f"soak: ROUTER DIED with exit code {router.returncode}")
        served = (router_requests(port) - start_count) if not died else None
        after_mb = rss_kb(router.pid) / 1024 if not died else None
    samples = sampler.samples
    under_load = [s for s in samples if s["requests"] >= 0]
    end_mb = under_load[-1]["rss_mb"] if under_load else float("nan")
    wrk_total = sum(r["requests"] for r in runs)
    counted = served if served is not None else (under_load[-1]["requests"] - start_count if under_load else 0)
    growth = end_mb - start_mb
    flat = growth <= max(5.0, 0.05 * start_mb)
    log(f"soak: {counted:,} requests (wrk counted {wrk_total:,}) in {wall:.0f} s; RSS {start_mb:.1f} -> "
        f"{end_mb:.1f} MB ({growth:+.1f} MB), {'flat' if flat else 'GROWING'}")
    return {
        "params": {"target": target, "connections": CONNECTIONS, "router_threads": threads},
        "requests_router": counted,
        "requests_wrk": wrk_total,
        "wall_s": wall,
        "rps": wrk_total / wall if wall else 0,
        "errors": sum(r["errors_total"] for r in runs),
        "rss_idle_mb": idle_mb,
        "rss_start_mb": start_mb,
        "rss_end_mb": end_mb,
        "rss_after_mb": after_mb,
        "rss_growth_mb": growth,
        "flat": flat,
        "router_died": died,
        "router_exit": router.returncode,
        "module_replaced": core_module_stamp() != stamp,
        "runs": runs,
        "samples": [{"t": round(s["t"], 2), "rss_mb": round(s["rss_mb"], 2),
                     "requests": s["requests"] - start_count} for s in under_load],
        "exits": children.exits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="1M requests through the router, RSS sampled.")
    parser.add_argument("--quick", action="store_true", help="50,000 requests")
    parser.add_argument("--requests", type=int, help="target number of requests")
    args = parser.parse_args()
    install_sigterm()
    data = run(args.quick, args.requests)
    path = save_json("soak-quick" if args.quick else "soak", data)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
