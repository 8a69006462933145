"""Shared pieces of the deployment checks: simulated engines on the host, free ports, podman.

`make test-deploy` builds the image first (`make image`) and names it in VLLM_ROUTER_IMAGE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
sys.path.insert(0, str(REPO / "tests"))
from support import free_port, prometheus_query, prometheus_server, sim_engines, wait_until  # noqa: E402,F401


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_until, counting a connection refused or reset as "not yet", and failing with `what`."""
    def quietly() -> bool:
        try:
            return bool(check())
        except (httpx.HTTPError, OSError):
            return False

    if not wait_until(quietly, timeout=timeout, step=0.2):
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def status_of(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


@pytest.fixture
def sim_engine() -> Iterator[Callable[..., Any]]:
    """`sim_engine(**SimEngine kwargs)` -> a started simulated engine on loopback (`.port`)."""
    with sim_engines(ttft=0.01, token_delay=0.005) as make:
        yield make


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get("VLLM_ROUTER_IMAGE")
    if not name:
        pytest.fail("no image to test: run `make test-deploy` (it builds the image and names it in VLLM_ROUTER_IMAGE)")
    return name


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result
