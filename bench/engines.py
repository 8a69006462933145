"""Simulated vLLM engines in their own process, so that their CPU time and memory stay apart
from the router's and the load generator's.

    python bench/engines.py '[{"max_seqs": 10000, "ttft": 0.05, "token_delay": 0.25, "threads": 2}]'

Each JSON object holds keyword arguments of `vllm_router._core.SimEngine` (port 0 by default).
Prints `PORTS [p1, p2, ...]` once all listen, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from vllm_router import _core


def main() -> None:
    specs = json.loads(sys.argv[1])
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    engines = []
    try:
        for spec in specs:
            spec = dict(spec)
            spec.setdefault("host", "127.0.0.1")
            spec.setdefault("port", 0)
            engine = _core.SimEngine(**spec)
            engine.start()
            engines.append(engine)
        print("PORTS " + json.dumps([e.port for e in engines]), flush=True)
        while not stop:
            time.sleep(0.1)
    finally:
        for engine in engines:
            engine.stop()


if __name__ == "__main__":
    main()
