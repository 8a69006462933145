"""Throughput and latency: direct vs nginx `proxy_pass` vs vllm-router, same backend, same load.

The backend is nginx answering every POST with a fixed chat completion (bench/nginx.py); the load
generator is wrk with bench/chat.lua. Three targets at each concurrency:

- direct: wrk -> backend
- nginx:  wrk -> nginx proxy_pass (keep-alive upstream) -> backend
- router: wrk -> vllm-router (--static-backends) -> backend

Main setup, pinned with taskset for repeatability on a small machine: the proxy under test
(nginx with worker_processes 1, or the router with --threads 1) alone on the last core; wrk (one
thread) and the backend share core 0. Two extra setups: "one core" (everything on core 0, c=1:
the proxy's own latency without cross-core wake-ups) and "unpinned" (no taskset, proxies with
as many workers/threads as cores, at the highest concurrency).

Each point runs `--repeat` times, targets interleaved, after a 1 s warm-up; the run with the
highest throughput is kept (the same rule for every target). The proxy's CPU time over the run
gives its CPU cost per request.

With `--baseline PATH` (another build's vllm-router executable, e.g. the previous commit's
built in a worktree), that router is a fourth target, measured interleaved with the others on
the same footing: the change's cost in CPU per request, in one run.

In the pinned setup one more target, **traced**, is this build's router with tracing on at
ratio 1.0 (`--otlp-traces-endpoint` to the backend nginx, which answers the OTLP POSTs with 200):
what a span per request costs, from EXTRA_TRACED_ROUNDS more rounds of router and traced alone.
How many spans it exported and dropped is read from its /metrics.

    python bench/throughput.py [--quick] [--duration S] [--repeat N] [--baseline PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.request
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from common import (CORES, Children, CpuSampler, children_of, core_module_stamp, free_port,
                    install_sigterm, log, run_wrk, save_json, start_router, temp_dir, wait_healthy)
from nginx import MODEL, backend_conf, proxy_conf, start_nginx

PATH = "/v1/chat/completions"
TARGETS = ["direct", "nginx", "router"]
BASELINE: list[str] = []  # the baseline router's command, when one is measured


class Stack:
    """One backend, one nginx proxy and one router, started with a given pinning."""

    def __init__(self, children: Children, tmp: Path, *, backend_cpus: str | None, proxy_cpus: str | None,
                 workers: int, tag: str, traced: bool = False) -> None:
        self.ports: dict[str, int] = {}
        self.pids: dict[str, list[int]] = {}
        bport, pport = free_port(), free_port()
        backend = start_nginx(children, tmp / f"{tag}-backend", backend_conf(tmp / f"{tag}-backend", bport),
                              bport, cpus=backend_cpus)
        proxy = start_nginx(children, tmp / f"{tag}-proxy", proxy_conf(tmp / f"{tag}-proxy", pport, bport, workers),
                            pport, cpus=proxy_cpus)
        self.children, self.tmp, self.tag = children, tmp, tag
        self.workers, self.proxy_cpus, self.bport = workers, proxy_cpus, bport
        self.crashes: list[dict[str, Any]] = []
        self.stamp = core_module_stamp()
        # CPU is counted over the processes that do the work: nginx workers (not the master).
        self.pids = {"direct": children_of(backend.pid) or [backend.pid],
                     "nginx": children_of(proxy.pid) or [proxy.pid]}
        self.ports = {"direct": bport, "nginx": pport}
        self.backend_pids = self.pids["direct"]
        self.router = None
        self.start_router()
        if BASELINE:
            baseline, port = start_router(children, tmp, threads=workers, backends=[f"http://127.0.0.1:{bport}"],
                                          models=[MODEL], cpus=proxy_cpus, name=f"{tag}-baseline", command=BASELINE)
            wait_healthy(port, 1)
            self.ports["baseline"] = port
            self.pids["baseline"] = [baseline.pid]
        self.targets = list(TARGETS)
        if traced:
            proc, port = start_router(children, tmp, threads=workers, backends=[f"http://127.0.0.1:{bport}"],
                                      models=[MODEL], cpus=proxy_cpus, name=f"{tag}-traced",
                                      extra=["--otlp-traces-endpoint", f"http://127.0.0.1:{bport}/v1/traces",
                                             "--otlp-traces-sample-ratio", "1"])
            wait_healthy(port, 1)
            self.ports["traced"] = port
            self.pids["traced"] = [proc.pid]
            self.targets.append("traced")

    def spans(self) -> dict[str, float] | None:
        """The traced router's vllm_router_trace_spans_total, by result."""
        if "traced" not in self.ports:
            return None
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.ports['traced']}/metrics", timeout=10).read().decode()
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r'^vllm_router_trace_spans_total\{result="(\w+)"\} (\S+)$', text, re.M)}

    def start_router(self) -> None:
        n = len(self.crashes)
        self.router, port = start_router(self.children, self.tmp, threads=self.workers,
                                         backends=[f"http://127.0.0.1:{self.bport}"], models=[MODEL],
                                         cpus=self.proxy_cpus, name=f"{self.tag}-router{n or ''}")
        wait_healthy(port, 1)
        self.ports["router"] = port
        self.pids["router"] = [self.router.pid]

    def check_router(self, when: str) -> bool:
        """True if the router died (it is then restarted, and the crash recorded)."""
        if self.router is None or self.router.poll() is None:
            return False
        code = self.router.returncode
        self.crashes.append({"setup": self.tag, "when": when, "exit_code": code,
                             "module_replaced": core_module_stamp() != self.stamp})
        self.stamp = core_module_stamp()
        log(f"  ROUTER DIED ({when}): exit code {code}; restarting it")
        self.children.stop(self.router)
        self.start_router()
        return True


SETTLE_S = 0.5  # a crash caused by the end of a wrk run shows within this


def measure(stack: Stack, target: str, connections: int, duration: float, wrk_cpus: str | None,
            threads: int = 1, warm_up: bool = True) -> dict[str, Any]:
    """One measured wrk run against a target, after a 1 s warm-up. For the router, a crash (its
    process gone) is looked for after each wrk run: the router is then restarted and the crash
    recorded; a measured run that the router did not survive to the end is marked invalid."""
    if target == "router":
        stack.check_router("before a run")
    url = lambda: f"http://127.0.0.1:{stack.ports[target]}{PATH}"  # noqa: E731 - the port changes on restart
    if warm_up:
        run_wrk(url(), connections=connections, duration=1, threads=threads, cpus=wrk_cpus)
        if target == "router":
            time.sleep(SETTLE_S)
            stack.check_router(f"at the end of a warm-up at c={connections}")  # restarted: measured cold
    proxy_pids = [] if target == "direct" else stack.pids[target]
    with CpuSampler(proxy_pids) as proxy_cpu, CpuSampler(stack.backend_pids) as backend_cpu:
        r = run_wrk(url(), connections=connections, duration=duration, threads=threads, cpus=wrk_cpus)
    r["valid"] = r["requests"] > 0 and r["errors"]["connect"] == 0 and r["errors"]["read"] == 0
    if target == "router":
        time.sleep(SETTLE_S)
        where = "at the end of" if r["valid"] else "during"
        r["router_died_after"] = stack.check_router(f"{where} a measured run at c={connections}")
    prate, brate = proxy_cpu.rate(), backend_cpu.rate()
    r.update({
        "target": target,
        "connections": connections,
        "proxy_cpu_pct": 100.0 * prate if prate is not None else None,
        "proxy_cpu_us_per_req": 1e6 * prate / r["rps"] if prate is not None and r["rps"] else None,
        "backend_cpu_pct": 100.0 * brate if brate is not None else None,
    })
    return r


def measure_retrying(stack: Stack, target: str, connections: int, duration: float, wrk_cpus: str | None,
                     threads: int = 1) -> dict[str, Any]:
    """`measure`, tried again (at most twice more, without warm-up) when the router did not
    survive the measured run; every crash is recorded."""
    r: dict[str, Any] = {}
    for attempt in range(3):
        try:
            r = measure(stack, target, connections, duration, wrk_cpus, threads, warm_up=attempt == 0)
        except RuntimeError:
            if target != "router" or not stack.check_router(f"during a run at c={connections}"):
                raise
            continue
        if r["valid"] or target != "router":
            return r
        log(f"  router run at c={connections} invalid (the router died under it): again")
    if not r:
        raise RuntimeError(f"no run of {target} at c={connections} completed")
    return r


def use_baseline(command: str) -> None:
    """Measure `command` (another build's vllm-router) as a fourth target."""
    BASELINE.append(command)
    TARGETS.append("baseline")


# The cost of tracing is a ratio of two close figures: it gets this many more rounds of just
# those two targets (at c > 1) than the throughput ranking needs.
EXTRA_TRACED_ROUNDS = 3


def sweep(stack: Stack, concurrencies: list[int], duration: float, repeat: int, wrk_cpus: str | None,
          label: str, threads: int = 1) -> list[dict[str, Any]]:
    rows = []
    for c in concurrencies:
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in stack.targets}
        for _ in range(repeat):
            for target in stack.targets:
                runs[target].append(measure_retrying(stack, target, c, duration, wrk_cpus, threads))
        paired = {t: list(rs) for t, rs in runs.items()}
        if "traced" in stack.targets and c > 1:
            for _ in range(EXTRA_TRACED_ROUNDS):
                for target in ("router", "traced"):
                    paired[target].append(measure_retrying(stack, target, c, duration, wrk_cpus, threads))
        for target in stack.targets:
            best = max(runs[target], key=lambda r: (r["valid"], r["rps"]))  # over the common rounds only
            best["setup"] = label
            best["all_rps"] = [round(r["rps"]) for r in runs[target]]
            # Run i of every target was measured in the same round: ratios of run i to run i are
            # the fairest comparison on a noisy machine (the report takes their median).
            best["all_cpu_us_per_req"] = [r["proxy_cpu_us_per_req"] for r in paired[target]]
            rows.append(best)
            log(f"  {label} c={c:<3} {target:<6} {best['rps']:>9.0f} rps  p50 {best['latency_us']['p50']:>6} us  "
                f"p99 {best['latency_us']['p99']:>6} us  errors {best['errors_total']}"
                + (f"  proxy CPU {best['proxy_cpu_pct']:.0f}% {best['proxy_cpu_us_per_req']:.1f} us/req"
                   if best["proxy_cpu_pct"] is not None and best["proxy_cpu_us_per_req"] is not None else ""))
    return rows


def syscall_profile(stack: Stack, connections: int = 64, seconds: int = 2) -> dict[str, Any] | None:
    """System calls per request of nginx's worker and of the router under the same load, counted
    with `perf trace -s` (None when perf is missing or not permitted). Tracing slows both: only
    the counts per request mean something here, not the rates."""
    if not shutil.which("perf"):
        return None
    out: dict[str, Any] = {}
    for target in ("nginx", "router"):
        if target == "router":
            stack.check_router("before the syscall profile")
        pid = stack.pids[target][0]
        report = stack.tmp / f"perf-trace-{target}.txt"
        perf = subprocess.Popen(["perf", "trace", "-s", "-p", str(pid), "-o", str(report)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(1.0)
            if perf.poll() is not None:
                return None
            r = run_wrk(f"http://127.0.0.1:{stack.ports[target]}{PATH}", connections=connections,
                        duration=seconds, cpus="0" if CORES >= 2 else None)
        finally:
            if perf.poll() is None:
                perf.send_signal(signal.SIGINT)
                try:
                    perf.wait(10)
                except subprocess.TimeoutExpired:
                    perf.kill()
                    perf.wait()
        calls: dict[str, int] = {}
        for line in report.read_text(errors="replace").splitlines() if report.exists() else []:
            m = re.match(r"^\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s+[\d.]+", line)
            if m:
                calls[m.group(1)] = calls.get(m.group(1), 0) + int(m.group(2))
        if not calls or not r["requests"]:
            return None
        per = {k: v / r["requests"] for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
        out[target] = {"requests": r["requests"], "total_per_request": sum(per.values()),
                       "per_request": {k: round(v, 2) for k, v in per.items() if v >= 0.05}}
        log(f"  syscalls per request, {target}: {out[target]['total_per_request']:.1f} "
            f"({', '.join(f'{k} {v:.2f}' for k, v in list(out[target]['per_request'].items())[:8])})")
        out[target]["cpu_by_object"] = cpu_profile(stack, target, connections)
    time.sleep(0.3)
    stack.check_router("after the syscall profile")
    return out


def cpu_profile(stack: Stack, target: str, connections: int, seconds: int = 2) -> dict[str, float] | None:
    """Where the proxy's CPU time goes, by object (kernel, the router's _core, libc, Python...),
    from `perf record` sampling during a short wrk run."""
    pid = stack.pids[target][0]
    data = stack.tmp / f"perf-{target}.data"
    rec = subprocess.Popen(["perf", "record", "-F", "999", "-p", str(pid), "-o", str(data), "--", "sleep",
                            str(seconds + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        run_wrk(f"http://127.0.0.1:{stack.ports[target]}{PATH}", connections=connections, duration=seconds,
                cpus="0" if CORES >= 2 else None)
        rec.wait(seconds + 15)
    except (subprocess.TimeoutExpired, RuntimeError):
        rec.kill()
        rec.wait()
        return None
    rep = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "--no-children"],
                         capture_output=True, text=True, timeout=60)
    shares: dict[str, float] = {}
    for line in rep.stdout.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(\S+)", line)
        if m:
            name = m.group(2)
            name = "kernel" if "kernel" in name else name.split(".cpython")[0].split(".so")[0]
            shares[name] = shares.get(name, 0.0) + float(m.group(1))
    if shares:
        log(f"  CPU by object, {target}: " + ", ".join(f"{k} {v:.0f}%" for k, v in list(shares.items())[:6]))
    rep = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso,sym", "--stdio", "--no-children"],
                         capture_output=True, text=True, timeout=60)
    top: list[tuple[float, str]] = []
    for line in rep.stdout.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if m and "kernel" not in m.group(2) and len(top) < 8:
            sym = m.group(3).strip()
            top.append((float(m.group(1)), sym if len(sym) <= 150 else sym[:149] + "…"))
    if shares:
        shares = {**shares, "_top_user_symbols": top}  # type: ignore[dict-item]
    return shares or None


def run(quick: bool = False, duration: float | None = None, repeat: int | None = None,
        concurrencies: list[int] | None = None, pinned_only: bool = False) -> dict[str, Any]:
    duration = duration or (2 if quick else 5)
    repeat = repeat or (1 if quick else 3)
    concurrencies = concurrencies or [1, 64, 256]
    last = str(CORES - 1)
    rows: list[dict[str, Any]] = []
    crashes: list[dict[str, Any]] = []
    profile = None
    spans = None
    with temp_dir("throughput") as tmp, Children() as children:
        if CORES >= 2:
            log("throughput: pinned (proxy alone on its core; wrk and backend on core 0)")
            stack = Stack(children, tmp, backend_cpus="0", proxy_cpus=last, workers=1, tag="pinned", traced=True)
            rows += sweep(stack, concurrencies, duration, repeat, "0", "pinned")
            time.sleep(2)  # the last batches out
            spans = stack.spans()
            log(f"  traced router's spans: {json.dumps(spans)}")
            profile = None if pinned_only else syscall_profile(stack)
            crashes += stack.crashes
        if CORES >= 2 and not pinned_only:
            log("throughput: one core (everything on core 0), c=1")
            one = Stack(children, tmp, backend_cpus="0", proxy_cpus="0", workers=1, tag="onecore")
            rows += sweep(one, [1], duration, repeat, "0", "one core")
            crashes += one.crashes
        if not pinned_only or CORES < 2:
            log(f"throughput: unpinned, {CORES} workers/threads")
            free = Stack(children, tmp, backend_cpus=None, proxy_cpus=None, workers=CORES, tag="unpinned")
            rows += sweep(free, [1, max(concurrencies)] if CORES < 2 else [max(concurrencies)], duration, repeat,
                          None, "unpinned", threads=min(CORES, 2))
            crashes += free.crashes
    for row in rows:
        row.pop("raw", None)
    return {
        "params": {"duration_s": duration, "repeat": repeat, "concurrencies": concurrencies, "cores": CORES,
                   "path": PATH, "body": "bench/chat.lua", "baseline": " ".join(BASELINE) or None},
        "rows": rows,
        "router_crashes": crashes,
        "syscalls": profile,
        "trace_spans": spans,
        "exits": children.exits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Direct vs nginx vs router throughput and latency.")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--duration", type=float, help="seconds per measured wrk run")
    parser.add_argument("--repeat", type=int, help="runs per point (best kept)")
    parser.add_argument("--baseline", help="another build's vllm-router, measured as a fourth target")
    parser.add_argument("--concurrencies", type=int, nargs="+", help="instead of 1 64 256")
    parser.add_argument("--pinned-only", action="store_true",
                        help="only the pinned setup, no profile: an A/B of CPU per request with many --repeat")
    args = parser.parse_args()
    install_sigterm()
    if args.baseline:
        use_baseline(args.baseline)
    data = run(args.quick, args.duration, args.repeat, args.concurrencies, args.pinned_only)
    name = "throughput-quick" if args.quick else "throughput-ab" if args.pinned_only else "throughput"
    path = save_json(name, data)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
