"""Many concurrent SSE streams through the router: its memory and the delay it adds per chunk.

A simulated engine (bench/engines.py, its own process) streams `tokens` tokens per request, one
every `token_delay` seconds, with room for every request at once (max_seqs >= streams). The
router runs as its own process (`vllm-router run`), so that its VmRSS is measured alone. One
asyncio process (sseclient.py, raw sockets) opens N streams through the router and timestamps
every SSE event. The same client also runs straight against the engine: the difference between
the two is what the router adds (the client's own lag on a loaded 2-core machine is in both).

Per-chunk extra delay: for each stream, the gap between consecutive token events at the client
minus the engine's token_delay (the engine emits token i at ttft + i * token_delay).

    python bench/streams.py            # 1,000 and 10,000 streams
    python bench/streams.py --quick    # 200 and 1,000 shorter streams
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from common import (CORES, Children, core_module_stamp, cpu_seconds, install_sigterm, log, percentile, raise_nofile, rss_kb,
                    save_json, start_engines, start_router, temp_dir, wait_healthy)
from sseclient import StreamResult, run_streams

MODEL = "sim-model"


def vm_status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def analyse(results: list[StreamResult], tokens: int, token_delay: float) -> dict[str, Any]:
    ok = [r for r in results if r.done and r.status == 200]
    extra: list[float] = []    # gap between consecutive token events minus token_delay
    late: list[float] = []     # lateness of each token event against the stream's own schedule
    ttfe: list[float] = []
    # Events: role (0) and token 0 (1) leave together, then token i is event i + 1; the finish
    # event and [DONE] leave with the last token.
    for r in ok:
        ev = r.events
        if len(ev) < tokens + 1:
            continue
        ttfe.append(ev[0] - r.sent)
        for i in range(2, tokens + 1):
            extra.append(ev[i] - ev[i - 1] - token_delay)
        # Token k (event k + 1) leaves the engine at origin + k * token_delay; the stream's origin
        # is taken from its least delayed token, so lateness >= 0 and 0 means "on time".
        shifted = [ev[k + 1] - k * token_delay for k in range(tokens)]
        origin = min(shifted)
        late.extend(x - origin for x in shifted)
    errors: dict[str, int] = {}
    for r in results:
        if not (r.done and r.status == 200):
            key = r.error.split(":")[0] if r.error else f"status {r.status}"
            errors[key] = errors.get(key, 0) + 1
    ms = 1000.0
    return {
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": errors,
        "gaps": len(extra),
        "lateness_ms": {
            "mean": statistics.fmean(late) * ms if late else float("nan"),
            "p50": percentile(late, 50) * ms,
            "p99": percentile(late, 99) * ms,
            "max": max(late) * ms if late else float("nan"),
        },
        "extra_delay_ms": {
            "mean": statistics.fmean(extra) * ms if extra else float("nan"),
            "p50": percentile(extra, 50) * ms,
            "p99": percentile(extra, 99) * ms,
            "p999": percentile(extra, 99.9) * ms,
            "max": max(extra) * ms if extra else float("nan"),
        },
        "first_event_s": {
            "p50": percentile(ttfe, 50),
            "p99": percentile(ttfe, 99),
            "max": max(ttfe) if ttfe else float("nan"),
        },
    }


async def sample_rss(pid: int, every: float, into: list[tuple[float, int]], stop: asyncio.Event) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        into.append((time.monotonic() - t0, rss_kb(pid)))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def client_run(port: int, n: int, tokens: int, pid: int | None,
                     timeout: float) -> tuple[list[StreamResult], Any, float, list[tuple[float, int]]]:
    body = {"model": MODEL, "stream": True, "max_tokens": tokens,
            "messages": [{"role": "user", "content": "Tell me a story."}]}
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, 0.5, samples, stop)) if pid else None
    try:
        results, stats, wall = await run_streams("127.0.0.1", port, body, n, timeout=timeout)
    finally:
        stop.set()
        if sampler:
            await sampler
    return results, stats, wall, samples


def one_run(n: int, *, via_router: bool, tokens: int, token_delay: float, ttft: float,
            router_threads: int, engine_threads: int) -> dict[str, Any]:
    timeout = ttft + tokens * token_delay + 20
    with temp_dir("streams") as tmp, Children() as children:
        spec = {"model": MODEL, "ttft": ttft, "token_delay": token_delay, "max_tokens": tokens,
                "max_seqs": max(n, 10000) + 100, "threads": engine_threads, "keep_alive_timeout": 60.0}
        eproc, ports = start_engines(children, tmp, [spec])
        target = ports[0]
        rproc = None
        if via_router:
            rproc, target = start_router(children, tmp, threads=router_threads,
                                         backends=[f"http://127.0.0.1:{ports[0]}"], models=[MODEL])
            wait_healthy(target, 1)
            time.sleep(0.5)
        pid = rproc.pid if rproc else None
        stamp = core_module_stamp()
        idle_rss = rss_kb(pid) if pid else 0
        cpu0 = cpu_seconds(pid) if pid else 0.0
        ecpu0 = cpu_seconds(eproc.pid)
        results, stats, wall, samples = asyncio.run(client_run(target, n, tokens, pid, timeout))
        row: dict[str, Any] = {
            "streams": n,
            "via": "router" if via_router else "direct",
            "wall_s": wall,
            "peak_open": stats.peak_open,
            "connect_errors": stats.connect_errors,
            "engine_cpu_s": cpu_seconds(eproc.pid) - ecpu0,
        }
        row.update(analyse(results, tokens, token_delay))
        if rproc is not None:
            row["router_died"] = rproc.poll() is not None
            row["router_exit"] = rproc.returncode
            row["module_replaced"] = core_module_stamp() != stamp
            if row["router_died"]:
                log(f"  ROUTER DIED during {n} streams: exit code {rproc.returncode}")
        if pid:
            row.update({
                "router_rss_idle_mb": idle_rss / 1024,
                "router_rss_peak_mb": max((s[1] for s in samples), default=0) / 1024,
                "router_hwm_mb": vm_status(pid, "VmHWM") / 1024,
                "router_rss_after_mb": rss_kb(pid) / 1024,
                "router_cpu_s": cpu_seconds(pid) - cpu0,
                "rss_samples": [(round(t, 2), round(kb / 1024, 1)) for t, kb in samples],
            })
        return row


def fitting(n: int, limit: int) -> int:
    """The most streams (at most n) that a proxy process can hold under an open-file limit: two
    descriptors per stream (client side and upstream side) and a margin for everything else."""
    most = (limit - 300) // 2
    return n if n <= most else most // 100 * 100


def run(quick: bool = False) -> dict[str, Any]:
    limit = raise_nofile()
    asked = [200, 1000] if quick else [1000, 10000]
    sizes = [fitting(n, limit) for n in asked]
    # 2 cores carry the client, the router and the engine: 20 tokens 1 s apart keep the event
    # rate (streams x 1/s) within what the machine can timestamp, while streams overlap fully.
    tokens, token_delay, ttft = (10, 0.5, 0.5) if quick else (20, 1.0, 1.0)
    threads = CORES
    for a, n in zip(asked, sizes):
        if a != n:
            log(f"streams: the open-file limit ({limit}, hard) lets a proxy hold {n} streams, not {a}: "
                f"measuring {n}")
    rows = []
    for n in sizes:
        for via_router in (False, True):
            log(f"streams: {n} {'through the router' if via_router else 'direct to the engine'}")
            row = one_run(n, via_router=via_router, tokens=tokens, token_delay=token_delay, ttft=ttft,
                          router_threads=threads, engine_threads=threads)
            log(f"  completed {row['completed']}/{n}, peak open {row['peak_open']}, "
                f"lateness mean {row['lateness_ms']['mean']:.2f} ms p99 {row['lateness_ms']['p99']:.2f} ms, "
                f"gap-delay p99 {row['extra_delay_ms']['p99']:.2f} ms, wall {row['wall_s']:.1f} s"
                + (f", router RSS peak {row['router_rss_peak_mb']:.1f} MB" if via_router else ""))
            rows.append(row)
    return {
        "params": {"tokens": tokens, "token_delay_s": token_delay, "ttft_s": ttft, "router_threads": threads,
                   "engine_threads": threads, "nofile": limit, "sizes": sizes, "asked": asked},
        "runs": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Concurrent SSE streams through the router.")
    parser.add_argument("--quick", action="store_true", help="small, short smoke run")
    args = parser.parse_args()
    install_sigterm()
    data = run(args.quick)
    path = save_json("streams-quick" if args.quick else "streams", data)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
