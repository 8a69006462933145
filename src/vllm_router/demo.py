"""`vllm-router demo`: three simulated engines of different sizes and speeds on loopback, and
the router in front of them. A newcomer's first command: no GPU, no config file.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from vllm_router import _core
from vllm_router.server import serve, start_router, stop_signals

DEMO_MODEL = "sim-llama-3.1-8b"


@dataclass(frozen=True)
class DemoEngine:
    name: str
    max_seqs: int
    ttft: float
    token_delay: float


# A big fast GPU, a mid-size one and a small slow one: least-load routing has something to do.
DEMO_ENGINES = (
    DemoEngine("big", max_seqs=8, ttft=0.05, token_delay=0.01),
    DemoEngine("medium", max_seqs=4, ttft=0.1, token_delay=0.02),
    DemoEngine("small", max_seqs=2, ttft=0.2, token_delay=0.04),
)


def start_engines(max_tokens: int = 32) -> list[Any]:
    engines = []
    for spec in DEMO_ENGINES:
        engine = _core.SimEngine(
            model=DEMO_MODEL,
            ttft=spec.ttft,
            token_delay=spec.token_delay,
            max_seqs=spec.max_seqs,
            max_tokens=max_tokens,
        )
        engine.start()
        engines.append(engine)
    return engines


def demo_config(engines: list[Any]) -> Any:
    config = _core.Config()
    config.servers = [
        _core.ServerConfig(f"http://127.0.0.1:{engine.port}", max_concurrent_requests=spec.max_seqs)
        for engine, spec in zip(engines, DEMO_ENGINES)
    ]
    return config


def instructions(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""[bold]vllm-router demo[/] — the router on {base}, in front of {len(DEMO_ENGINES)} simulated engines.

Try it from another terminal:

  curl -N {base}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{DEMO_MODEL}", "stream": true, "messages": [{{"role": "user", "content": "Hello"}}]}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{base}/v1", api_key="none"); \\
print(c.chat.completions.create(model="{DEMO_MODEL}", messages=[{{"role": "user", "content": "Hi"}}]).choices[0].message.content)'

  curl {base}/load-stats    curl {base}/health    curl {base}/v1/models

Ctrl-C stops everything."""


def run_demo(host: str, port: int, threads: int) -> int:
    console = Console(highlight=False, soft_wrap=True)
    with stop_signals() as stop:
        return _run_demo(console, host, port, threads, stop)


def _run_demo(console: Console, host: str, port: int, threads: int, stop: threading.Event) -> int:
    engines = start_engines()
    try:
        router = start_router(demo_config(engines), host, port, threads)
        console.print(instructions(router.port))

        from vllm_router.dashboard import Dashboard, StatsLogger, echo_stats_to_stdout, should_show_dashboard

        if should_show_dashboard():
            view = Dashboard(router, inline=True).start()  # inline keeps the instructions visible
        else:
            echo_stats_to_stdout()
            view = StatsLogger(router, 5.0).start()
        try:
            return serve(router, stop)
        finally:
            view.stop()
    finally:
        for engine in engines:
            engine.stop()
