"""Shared fixtures: simulated engines and routers on loopback, port 0 always, stopped by the
test that started them."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from vllm_router import _core

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import free_port, sim_engines, wait_until  # noqa: E402,F401  (re-exported to the tests)


# SPEC §2's acceptance case: four problems, on lines 3, 4, 7 and 8.
FOUR_ERRORS_TOML = """\
[servers]
servers = [
  { url = "ftp://gpu-1:8081" },
  { url = "http://gpu-2:8081", max_concurrent_requests = 0 },
]
[config]
health_check_intervl = 10
health_check_min_success_rate = 1.7
"""


@pytest.fixture
def engine_factory() -> Iterator[Callable[..., Any]]:
    """`engine_factory(**SimEngine kwargs)` -> a started simulated engine (`.port`, `.stats()`)."""
    with sim_engines(ttft=0.005, token_delay=0.002) as make:
        yield make


def url_of(engine_or_port: Any) -> str:
    port = engine_or_port if isinstance(engine_or_port, int) else engine_or_port.port
    return f"http://127.0.0.1:{port}"


def make_config(servers: list[dict[str, Any]], **settings: Any) -> Any:
    """A _core.Config from plain dicts; settings default to fast test values."""
    config = _core.Config()
    config.servers = [_core.ServerConfig(**s) for s in servers]
    s = config.settings
    s.retry_delay = 0.01
    s.health_check_timeout = 1.0
    for key, value in settings.items():
        setattr(s, key, value)
    config.settings = s
    errors = _core.validate_config(config, True)
    assert not errors, [str(e) for e in errors]
    return config


@pytest.fixture
def router_factory() -> Iterator[Callable[..., Any]]:
    """`router_factory(servers=[{url=...}], **settings)` -> a started router (`.port`)."""
    routers: list[Any] = []

    def make(servers: list[dict[str, Any]], threads: int = 2, **settings: Any) -> Any:
        router = _core.Router(make_config(servers, **settings), "127.0.0.1", 0, threads, "test")
        router.start()
        routers.append(router)
        return router

    yield make
    for router in routers:
        with contextlib.suppress(Exception):
            router.stop()
