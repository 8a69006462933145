"""Runs every benchmark in turn and rewrites docs/benchmarks.md and its plots (docs/img/).

    python bench/run_all.py                  # the full suite, < 15 minutes on 2 cores
    python bench/run_all.py --quick          # a smoke run of everything; writes bench/out/ only
    python bench/run_all.py --only soak      # some parts (throughput, streams, soak, routing)
    python bench/run_all.py --render-only    # re-render the page from bench/out/results.json

Results go to bench/out/ (git-ignored): one JSON per part and results.json with everything. A part
that fails is recorded as failed (with its error) and the others still run; every child process
is stopped even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

from common import OUT, REPO, core_module_stamp, install_sigterm, log, machine_info, raise_nofile, save_json

PARTS = ("throughput", "streams", "soak", "uploads", "routing")


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def run_part(name: str, quick: bool) -> dict[str, Any]:
    module = __import__(name)
    t0 = time.monotonic()
    try:
        data = module.run(quick)
        status = "ok"
        error = ""
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a failed part is reported, the others still run
        data, status, error = None, "failed", f"{e!r}\n{traceback.format_exc()}"
        log(f"{name} FAILED: {e!r}")
    return {"status": status, "error": error, "seconds": time.monotonic() - t0, "data": data}


def main() -> None:
    parser = argparse.ArgumentParser(description="The whole benchmark suite, and the page it renders.")
    parser.add_argument("--quick", action="store_true", help="short smoke runs; renders into bench/out/")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    parser.add_argument("--render-only", action="store_true", help="render bench/out/results.json again")
    args = parser.parse_args()
    install_sigterm()
    import report

    results_name = "results-quick" if args.quick else "results"
    if args.render_only:
        results = json.loads((OUT / f"{results_name}.json").read_text())
    else:
        raise_nofile()
        previous: dict[str, Any] = {}
        if args.only and (OUT / f"{results_name}.json").exists():
            previous = json.loads((OUT / f"{results_name}.json").read_text())
        results = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "quick": args.quick,
            "machine": machine_info(),
            "load_before": load_average(),
            "argv": " ".join(sys.argv),
            "parts": dict(previous.get("parts", {})),
            "module_stamp_start": core_module_stamp(),
        }
        if os.environ.get("BENCH_BASELINE"):
            # Another build's vllm-router, measured beside this one in the throughput part.
            import throughput
            throughput.use_baseline(os.environ["BENCH_BASELINE"])
        t0 = time.monotonic()
        for name in args.only or PARTS:
            log(f"=== {name}")
            results["parts"][name] = run_part(name, args.quick)
            save_json(results_name, results)
        results["seconds"] = time.monotonic() - t0
        if args.only and previous.get("seconds"):
            results["seconds_note"] = "partial rerun (--only): total time is not that of the whole suite"
        results["load_after"] = load_average()
        results["module_stamp_end"] = core_module_stamp()
        save_json(results_name, results)
        log(f"all parts done in {results['seconds'] / 60:.1f} min")

    if args.quick:
        page, img = OUT / "benchmarks-quick.md", OUT / "img"
    else:
        page, img = REPO / "docs" / "benchmarks.md", REPO / "docs" / "img"
    report.render(results, page, img)
    log(f"wrote {os.path.relpath(page, REPO)} and plots in {os.path.relpath(img, REPO)}/")
    failed = [n for n, p in results["parts"].items() if p["status"] != "ok"]
    if failed:
        log(f"failed parts: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
