"""What a Python callback costs: wrk through the router without a callback, then with a no-op
pre_request callback, against the same simulated engine.

    .venv/bin/python bench/callback_overhead.py [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path

from vllm_router import CustomCallbackHandler, _core
from vllm_router.callbacks import CallbackRunner

HERE = Path(__file__).resolve().parent


class NoOp(CustomCallbackHandler):
    def pre_request(self, request, request_body, request_json):
        return None


def wrk(port: int, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(HERE / "chat.lua"),
         f"http://127.0.0.1:{port}/v1/chat/completions"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+(\S+)", out).group(1)
    if "Non-2xx" in out:
        raise SystemExit(f"errors during the run:\n{out}")
    return rps, p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    engine = _core.SimEngine(ttft=0.0, token_delay=0.0, max_tokens=1, max_seqs=100000, keep_alive_timeout=0)
    engine.start()
    config = _core.Config()
    config.servers = [_core.ServerConfig(f"http://127.0.0.1:{engine.port}", max_concurrent_requests=1000)]
    router = _core.Router(config, "127.0.0.1", 0, 1, "bench")
    router.start()
    try:
        plain = wrk(router.port, args.seconds, args.connections)
        runner = CallbackRunner(router, NoOp()).start()
        time.sleep(0.2)
        with_cb = wrk(router.port, args.seconds, args.connections)
        runner.stop()
    finally:
        router.stop()
        engine.stop()
    print(f"no callback:        {plain[0]:9.0f} req/s  p50 {plain[1]}")
    print(f"no-op pre_request:  {with_cb[0]:9.0f} req/s  p50 {with_cb[1]}")
    print(f"ratio:              {with_cb[0] / plain[0]:.2f}")


if __name__ == "__main__":
    main()
