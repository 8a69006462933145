"""The operators' live view of the fleet: a Rich panel on a terminal, plain stats lines elsewhere.

Everything shown comes from three snapshots of a running `_core.Router`: `backends()`,
`request_stats()` and `stats()`. The renderers (`render_dashboard`, `stats_line`) are pure
functions of those snapshots, so they are tested with hand-made dicts; `Dashboard` and
`StatsLogger` only add a thread that takes a fresh snapshot every interval.

A server's load is max(router's in-flight, engine's scraped `running`): the router's count is
exact for its own requests, the engine's also sees requests that bypass the router.

Logs beside an inline panel: while a `rich.live.Live` runs, it replaces `sys.stdout` and
`sys.stderr` by proxies that print above the panel. A `logging.StreamHandler` made earlier still
holds the real stream and would scribble over the panel, so `Dashboard.start()` points such
handlers at a `CurrentStream` (which writes to whatever `sys.stderr` is at the time of the write)
and puts them back on `stop()`. Handlers created with `CurrentStream("stderr")` need nothing.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Literal, Mapping, Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

log = logging.getLogger("vllm_router.dashboard")
STATS_LOGGER = "vllm_router.stats"

WARN_AT = 70.0  # utilization percent at which a healthy server turns 🟡
CRIT_AT = 90.0  # ... and 🔴

Backends = Sequence[Mapping[str, Any]]
RequestStats = Mapping[str, Mapping[str, Any]]
RouterStats = Mapping[str, Any]

Level = Literal["ok", "high", "critical", "down"]
ICONS: dict[Level, str] = {"ok": "✅", "high": "🟡", "critical": "🔴", "down": "❌"}
LEVEL_STYLES: dict[Level, str] = {"ok": "green", "high": "yellow", "critical": "bold red", "down": "red"}


# --- numbers ------------------------------------------------------------------------------------

def _finite(x: Any) -> float:
    """Scraped values can be NaN or +Inf (vLLM's own metrics); treat those as absent."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


# Shown for a server whose /metrics has no vllm: load series.
NO_ENGINE_STATS = "no engine stats"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _one_line(s: str) -> str:
    return " ".join(s.splitlines())


@dataclass(frozen=True)
class ServerView:
    """One server as the operator sees it."""

    url: str
    models: str
    healthy: bool
    state: str
    scraped: bool
    # False when the server's /metrics has no vllm: load series (an engine started with
    # --disable-log-stats): its running/waiting are unknown, not zero.
    engine_stats: bool
    running: float
    waiting: float
    load: float
    capacity: int
    qps: float
    ttft: float  # 0 when the window holds no streamed answer
    name: str = ""  # a discovered pod's name, or the file's `name`

    @property
    def utilization(self) -> float:
        return 100.0 * self.load / self.capacity if self.capacity > 0 else 0.0

    @property
    def level(self) -> Level:
        if not self.healthy:
            return "down"
        if self.utilization >= CRIT_AT:
            return "critical"
        if self.utilization >= WARN_AT:
            return "high"
        return "ok"

    @property
    def short_name(self) -> str:
        """`vllm-0 10.1.2.3:8000` for a named server (a pod: its name and IP), else `host:port`."""
        address = self.url.split("://", 1)[-1].rstrip("/")
        return f"{self.name} {address}" if self.name else address


@dataclass(frozen=True)
class FleetView:
    servers: list[ServerView]
    router: RouterStats = field(default_factory=dict)

    @property
    def healthy(self) -> int:
        return sum(s.healthy for s in self.servers)

    @property
    def load(self) -> float:
        return sum(s.load for s in self.servers)

    @property
    def capacity(self) -> int:
        return sum(s.capacity for s in self.servers)

    @property
    def utilization(self) -> float:
        return 100.0 * self.load / self.capacity if self.capacity > 0 else 0.0

    @property
    def qps(self) -> float:
        return sum(s.qps for s in self.servers)

    @property
    def ttft(self) -> float:
        """The servers' TTFT averages weighted by their request rate."""
        weighted = [(s.ttft, s.qps) for s in self.servers if s.ttft > 0 and s.qps > 0]
        total = sum(w for _, w in weighted)
        return sum(t * w for t, w in weighted) / total if total > 0 else 0.0


def fleet_view(backends: Backends, request_stats: RequestStats, router_stats: RouterStats) -> FleetView:
    servers = []
    for b in backends:
        url = str(b.get("url", ""))
        rs = request_stats.get(url, {})
        engine_stats = bool(b.get("engine_stats", True))
        scraped = bool(b.get("scraped", False)) and engine_stats
        running = _finite(b.get("running")) if scraped else 0.0
        servers.append(ServerView(
            url=url,
            models=", ".join(str(m) for m in b.get("models", ())),
            healthy=bool(b.get("healthy", False)),
            state=str(b.get("state", "healthy" if b.get("healthy") else "unhealthy")),
            scraped=scraped,
            engine_stats=engine_stats,
            running=running,
            waiting=_finite(b.get("waiting")) if scraped else 0.0,
            load=max(_finite(b.get("in_flight")), running),
            capacity=int(_finite(b.get("capacity"))),
            qps=_finite(rs.get("qps")),
            ttft=_finite(rs.get("avg_ttft")),
            name=str(b.get("name") or ""),
        ))
    return FleetView(servers, router_stats)


# --- renderers ----------------------------------------------------------------------------------

def _title(fleet: FleetView) -> Text:
    n = len(fleet.servers)
    down = n - fleet.healthy
    health = "no servers" if n == 0 else ("all healthy" if down == 0 else f"{down} unhealthy")
    style = "green" if down == 0 else ("bold red" if fleet.healthy == 0 else "yellow")
    title = Text("vllm-router", style="bold")
    title.append(f" · {fleet.healthy}/{n} healthy", style=style)
    title.append(f" ({health}) · utilization {fleet.utilization:.1f}% · {fleet.qps:.1f} req/s")
    return title


def _footer(stats: RouterStats) -> Text:
    parts = [
        ("requests", stats.get("requests", 0)),
        ("retries", stats.get("retries", 0)),
        ("client aborts", stats.get("client_aborts", 0)),
        ("upstream errors", stats.get("upstream_errors", 0)),
        ("active", stats.get("active", 0)),
    ]
    footer = Text()
    for i, (name, value) in enumerate(parts):
        if i:
            footer.append(" · ", style="dim")
        footer.append(f"{name} ")
        footer.append(str(value), style="bold")
    return footer


def render_dashboard(
    backends: Backends,
    request_stats: RequestStats,
    router_stats: RouterStats,
    now: datetime | None = None,
) -> RenderableType:
    """The live panel: a row per server, totals underneath. Pure: same input, same picture."""
    fleet = fleet_view(backends, request_stats, router_stats)
    clock = (now or datetime.now()).strftime("%H:%M:%S")

    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False)
    table.add_column("time", no_wrap=True, style="dim")
    table.add_column("server", overflow="fold", ratio=3)
    table.add_column("models", overflow="fold", ratio=2)
    for name in ("running", "waiting", "load/cap", "util", "qps", "avg ttft"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)

    for s in fleet.servers:
        dash = "–"
        status = Text(ICONS[s.level])
        if s.state != "healthy":
            status.append(f" {s.state}")
        if not s.engine_stats:
            status.append(f" {NO_ENGINE_STATS}", style="yellow")
        table.add_row(
            clock,
            Text(f"{s.name} {s.url}" if s.name else s.url),
            Text(s.models or dash),
            _num(s.running) if s.scraped else dash,
            _num(s.waiting) if s.scraped else dash,
            f"{_num(s.load)}/{s.capacity}",
            Text(f"{s.utilization:.1f}%", style=LEVEL_STYLES[s.level]),
            f"{s.qps:.2f}",
            f"{s.ttft:.3f}s" if s.ttft > 0 else dash,
            status,
            style="strike dim" if not s.healthy else None,
        )
    if not fleet.servers:
        table.add_row(clock, Text("no servers configured or discovered", style="dim"), *[""] * 8)

    return Panel(Group(table, Text(""), _footer(router_stats)), title=_title(fleet), title_align="left",
                 border_style="blue")


def stats_line(backends: Backends, request_stats: RequestStats, router_stats: RouterStats) -> str:
    """One plain line for logs and non-terminals, e.g.
    `servers 2/3 healthy, load 5/12 (41.7%), 12.3 req/s, ttft 0.210s, active 4 | 10.0.0.1:8000: 2/3 ok ...`
    """
    fleet = fleet_view(backends, request_stats, router_stats)
    head = (f"servers {fleet.healthy}/{len(fleet.servers)} healthy, "
            f"load {_num(fleet.load)}/{fleet.capacity} ({fleet.utilization:.1f}%), "
            f"{fleet.qps:.1f} req/s, "
            f"ttft {f'{fleet.ttft:.3f}s' if fleet.ttft > 0 else '-'}, "
            f"active {router_stats.get('active', 0)}")
    per_server = []
    for s in fleet.servers:
        word = s.state if s.level == "down" else s.level
        waiting = f" wait {_num(s.waiting)}" if s.scraped and s.waiting else ""
        marker = f" ({NO_ENGINE_STATS})" if not s.engine_stats else ""
        per_server.append(f"{s.short_name}: {_num(s.load)}/{s.capacity} {word}{waiting}{marker}")
    return _one_line(" | ".join([head, *per_server]))


# --- snapshots and terminals --------------------------------------------------------------------

def snapshot(router: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    """(backends, request_stats, stats) of a running router, the three renderers' arguments."""
    return router.backends(), router.request_stats(), router.stats()


def should_show_dashboard(stream: IO[str] | None = None) -> bool:
    """A panel only on a real terminal; Docker, k8s, pipes and CI get plain stats lines."""
    stream = sys.stdout if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or not a file
        tty = False
    return tty and os.environ.get("TERM", "").lower() != "dumb"


class CurrentStream:
    """A stream for `logging.StreamHandler` that writes to `sys.<name>` as it is at write time,
    so logs follow Rich Live's redirection above the panel (and come back when it stops)."""

    def __init__(self, name: Literal["stdout", "stderr"] = "stderr") -> None:
        self.name = name

    def _target(self) -> IO[str]:
        return getattr(sys, self.name)

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        try:
            return bool(self._target().isatty())
        except (AttributeError, ValueError, OSError):
            return False


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers
            if type(h) is logging.StreamHandler]  # not FileHandler and other subclasses


class Dashboard:
    """The live panel of a running router, re-rendered from a fresh snapshot every `refresh_s`.

    `inline=False`: full screen (the terminal's alternate screen, restored on stop).
    `inline=True` (with `--console`): the panel stays at the bottom and logs print above it.
    """

    def __init__(self, router: Any, inline: bool, refresh_s: float = 1.0,
                 console: Console | None = None) -> None:
        self.router = router
        self.inline = inline
        self.refresh_s = refresh_s
        self.console = console or Console()
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._retargeted: list[tuple[logging.StreamHandler, IO[str]]] = []

    def _render(self) -> RenderableType:
        return render_dashboard(*snapshot(self.router))

    def start(self) -> "Dashboard":
        if self._live is not None:
            return self
        self._stop.clear()
        self._live = Live(self._render(), console=self.console, screen=not self.inline,
                          transient=False, auto_refresh=False, redirect_stdout=True, redirect_stderr=True)
        real = {id(sys.stdout): "stdout", id(sys.stderr): "stderr"}
        self._live.start(refresh=True)
        for handler in _stream_handlers():
            name = real.get(id(handler.stream))
            if name:
                self._retargeted.append((handler, handler.stream))
                handler.setStream(CurrentStream(name))  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self._run, name="vllm-router-dashboard", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                renderable = self._render()
            except Exception:  # noqa: BLE001 - a stopping router must not kill the view
                log.debug("dashboard snapshot failed", exc_info=True)
                continue
            if self._live is not None and not self._stop.is_set():
                self._live.update(renderable, refresh=True)

    def stop(self) -> None:
        """Stops the thread, restores the terminal and the log handlers. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.refresh_s + 5)
            self._thread = None
        if self._live is not None:
            try:
                self._live.stop()
            finally:
                self._live = None
                for handler, stream in self._retargeted:
                    handler.setStream(stream)
                self._retargeted.clear()

    def __enter__(self) -> "Dashboard":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StatsLogger:
    """Logs `stats_line(...)` every `interval_s` to the `vllm_router.stats` logger (at INFO, even
    when the package logs at WARNING: asking for stats lines is asking to see them)."""

    def __init__(self, router: Any, interval_s: float = 30.0, logger: logging.Logger | None = None) -> None:
        self.router = router
        self.interval_s = interval_s
        self.logger = logger or logging.getLogger(STATS_LOGGER)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def log_once(self) -> None:
        try:
            line = stats_line(*snapshot(self.router))
        except Exception:  # noqa: BLE001
            log.debug("stats snapshot failed", exc_info=True)
            return
        self.logger.info("%s", line)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.log_once()

    def start(self) -> "StatsLogger":
        if self._thread is None:
            if self.logger.level == logging.NOTSET:
                self.logger.setLevel(logging.INFO)
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="vllm-router-stats", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "StatsLogger":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def echo_stats_to_stdout() -> logging.Handler:
    """Non-terminal without --console: print the stats lines on stdout (`docker logs`, k8s)."""
    handler = logging.StreamHandler(CurrentStream("stdout"))  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger(STATS_LOGGER).addHandler(handler)
    return handler
