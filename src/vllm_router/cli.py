"""The `vllm-router` command line: thin Typer commands that delegate to the package."""

from __future__ import annotations

import enum
import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from vllm_router import __version__, _core
from vllm_router.cpus import usable_cpus
from vllm_router.settings import Resolved, effective_dict, resolve, settings_rows, split_list

app = typer.Typer(
    name="vllm-router",
    help="A fast, fleet-aware router in front of vLLM servers.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold api keys
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # one error per line, grep-able


class RoutingLogic(str, enum.Enum):
    least_load = "least-load"
    roundrobin = "roundrobin"
    session = "session"
    random = "random"


class ServiceDiscovery(str, enum.Enum):
    static = "static"
    k8s = "k8s"


class LogFormat(str, enum.Enum):
    text = "text"
    json = "json"


_DEFAULTS = _core.Settings()


def _from_file(key: str, unit: str = "") -> str:
    """The help's default for a flag that overrides a [config] key (Rich would eat "[default: ...]"
    written into the help text as markup, so defaults go through show_default)."""
    return f"the file's {key}, else {getattr(_DEFAULTS, key):g}{unit}"


class LogLevel(str, enum.Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"vllm-router {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_version_callback, is_eager=True),
    ] = False,
) -> None:
    """A fast, fleet-aware router in front of vLLM servers."""


def _print_errors(resolved: Resolved) -> None:
    n = len(resolved.errors)
    err.print(f"[bold red]{n} error{'s' if n != 1 else ''}[/] in the configuration:", markup=True)
    for line in resolved.errors:
        err.print(f"  - {line}", markup=False)


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", envvar="CONFIG_PATH", help="The servers.toml to read.")
]


@app.command()
def run(
    config: ConfigOption = Path("servers.toml"),
    host: Annotated[str, typer.Option(envvar="HOST", help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="PORT", min=0, max=65535, help="Port to listen on.")] = 8888,
    console: Annotated[
        bool, typer.Option("--console", envvar="LOG_TO_CONSOLE", show_default="off",
                           help="Write logs to the terminal (stderr) too.")
    ] = False,
    log_level: Annotated[LogLevel, typer.Option(
        envvar="LOG_LEVEL", case_sensitive=False,
        help="DEBUG adds each request's routing decision and each failed health check.")] = LogLevel.INFO,
    log_dir: Annotated[str, typer.Option(
        envvar="LOG_DIR", help='Folder of the log files; "" or "-": no files, logs on stdout (containers).')] = "logs",
    log_format: Annotated[LogFormat, typer.Option(
        envvar="LOG_FORMAT", case_sensitive=False,
        help="Format of the logs on stdout/stderr: readable lines or JSON lines.")] = LogFormat.text,
    reload: Annotated[bool, typer.Option("--reload", show_default="off",
                                         help="Restart on code change (development).")] = False,
    service_discovery: Annotated[
        Optional[ServiceDiscovery], typer.Option(
            envvar="SERVICE_DISCOVERY", show_default=f"the file's service_discovery, else {_DEFAULTS.service_discovery}",
            help="Where servers come from besides the file: k8s also follows the pods that match.")
    ] = None,
    k8s_namespace: Annotated[
        Optional[str], typer.Option(envvar="K8S_NAMESPACE", show_default="the router pod's own, else default",
                                    help="Namespace of the pods (with --service-discovery k8s).")
    ] = None,
    k8s_label_selector: Annotated[
        Optional[str], typer.Option(envvar="K8S_LABEL_SELECTOR", show_default="the file's k8s_label_selector, else all pods",
                                    help="Label selector of the pods, as kubectl -l (app=vllm,tier!=test).")
    ] = None,
    k8s_port: Annotated[
        Optional[int], typer.Option(envvar="K8S_PORT", min=1, max=65535,
                                    show_default=f"the file's k8s_port, else {_DEFAULTS.k8s_port}",
                                    help="Port of vLLM in each pod.")
    ] = None,
    static_backends: Annotated[
        Optional[str], typer.Option(envvar="STATIC_BACKENDS", show_default="the file's servers",
                                    help="Comma-separated server URLs; replaces the file's servers.")
    ] = None,
    static_models: Annotated[
        Optional[str], typer.Option(envvar="STATIC_MODELS", show_default="discovered from each server",
                                    help="Comma-separated models, one per --static-backends URL.")
    ] = None,
    routing_logic: Annotated[
        Optional[RoutingLogic], typer.Option(envvar="ROUTING_LOGIC", show_default=f"the file's routing_logic, else {_DEFAULTS.routing_logic}",
                                             help="How a server is chosen.")
    ] = None,
    session_key: Annotated[
        Optional[str], typer.Option(envvar="SESSION_KEY", show_default=f"the file's session_key, else {_DEFAULTS.session_key}",
                                    help="Header whose value pins a session.")
    ] = None,
    engine_stats_interval: Annotated[
        Optional[float], typer.Option(envvar="ENGINE_STATS_INTERVAL", show_default=_from_file("engine_stats_interval", " s"),
                                      help="Seconds between scrapes of servers' /metrics.")
    ] = None,
    request_stats_window: Annotated[
        Optional[float], typer.Option(envvar="REQUEST_STATS_WINDOW", show_default=_from_file("request_stats_window", " s"),
                                      help="Seconds of request statistics kept.")
    ] = None,
    log_stats: Annotated[bool, typer.Option("--log-stats", envvar="LOG_STATS", show_default="off",
                                            help="Log a stats line periodically.")] = False,
    log_stats_interval: Annotated[float, typer.Option(envvar="LOG_STATS_INTERVAL", min=0.1, help="Seconds between stats lines.")] = 30.0,
    callbacks: Annotated[
        Optional[str], typer.Option(envvar="CALLBACKS", show_default="none",
                                    help="module.attr of a CustomCallbackHandler instance.")
    ] = None,
    threads: Annotated[
        Optional[int], typer.Option(envvar="THREADS", min=1, max=256,
                                    show_default="the CPUs this process may use: affinity, cgroup quota",
                                    help="I/O threads.")
    ] = None,
    health_check_interval: Annotated[
        Optional[float], typer.Option(envvar="HEALTH_CHECK_INTERVAL", show_default=_from_file("health_check_interval", " s"),
                                      help="Seconds between active checks.")
    ] = None,
    config_reload_interval: Annotated[
        Optional[float], typer.Option(envvar="CONFIG_RELOAD_INTERVAL",
                                      show_default=_from_file("config_reload_interval", " s"),
                                      help="Seconds between looks at the file.")
    ] = None,
    request_timeout: Annotated[
        Optional[float], typer.Option(envvar="REQUEST_TIMEOUT", show_default=_from_file("request_timeout", " s"),
                                      help="Seconds to the first response byte.")
    ] = None,
    otlp_traces_endpoint: Annotated[
        Optional[str], typer.Option(
            envvar="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", show_default="off",
            help="OTLP/HTTP receiver of the router's spans (http://collector:4318 gets /v1/traces added).")
    ] = None,
    otlp_traces_sample_ratio: Annotated[
        float, typer.Option(envvar="OTEL_TRACES_SAMPLER_ARG", min=0.0, max=1.0,
                            help="Share of new traces sampled; a client's traceparent decides for its own.")
    ] = 1.0,
    print_config: Annotated[
        bool, typer.Option("--print-config", show_default="off",
                           help="Print the effective configuration as JSON and exit.")
    ] = False,
) -> None:
    """Start the router in the foreground."""
    def resolve_now() -> Resolved:
        return resolve(
            config,
            overrides={
                "routing_logic": routing_logic.value if routing_logic else None,
                "session_key": session_key,
                "engine_stats_interval": engine_stats_interval,
                "request_stats_window": request_stats_window,
                "health_check_interval": health_check_interval,
                "config_reload_interval": config_reload_interval,
                "request_timeout": request_timeout,
                "service_discovery": service_discovery.value if service_discovery else None,
                "k8s_namespace": k8s_namespace,
                "k8s_label_selector": k8s_label_selector,
                "k8s_port": k8s_port,
            },
            static_backends=split_list(static_backends),
            static_models=split_list(static_models),
        )

    resolved = resolve_now()
    if not resolved.ok:
        _print_errors(resolved)
        raise typer.Exit(1)
    traces_endpoint = None
    if otlp_traces_endpoint:
        traces_endpoint = _traces_url(otlp_traces_endpoint)
        if traces_endpoint is None:
            err.print(f"--otlp-traces-endpoint must be an http:// or https:// URL, got {otlp_traces_endpoint!r}",
                      markup=False)
            raise typer.Exit(1)
    if print_config:
        effective_threads = threads or usable_cpus()
        out.print_json(json.dumps(effective_dict(resolved.config, host=host, port=port, threads=effective_threads)))
        return
    if reload:
        from vllm_router.reloader import run_with_reloader

        raise typer.Exit(run_with_reloader())
    from vllm_router.logs import EventPump, log_dir_from_option, setup_logging

    folder = log_dir_from_option(log_dir)
    logs_on_stdout = folder is None  # a container's way: no files, records on stdout
    try:
        setup_logging(folder, level=log_level.value, console=console, log_format=log_format.value)
    except ValueError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(1)
    from vllm_router.server import serve, start_router, stop_signals

    handler = None
    if callbacks:
        from vllm_router.callbacks import load_handler

        try:
            handler = load_handler(callbacks)
        except ValueError as e:
            err.print(str(e), markup=False)
            raise typer.Exit(1)

    # The signal handlers go in before the router starts: a signal in between is not lost.
    tracer = None
    discovery = None
    from vllm_router.discovery import Discovery, DiscoveryError, ServerSet

    def prepare(router: object) -> None:
        nonlocal tracer, discovery
        if traces_endpoint:
            from vllm_router.tracing import Tracer

            tracer = Tracer(router, traces_endpoint, otlp_traces_sample_ratio).start()
        # Before the router listens: /health tells of discovery from the first request on, and
        # the pods listed by then are in the router's first look at its servers.
        discovery = Discovery(router, ServerSet(router, resolved.config))
        discovery.follow(resolved.config.settings)

    with stop_signals() as stop:
        try:
            router = start_router(resolved.config, host, port, threads or usable_cpus(), prepare)
        except (RuntimeError, ValueError, DiscoveryError) as e:
            if discovery:
                discovery.stop()
            if tracer:
                tracer.stop()
            err.print(str(e) if isinstance(e, ValueError) else f"cannot start: {e}", markup=False)
            raise typer.Exit(1)
        assert discovery is not None
        servers = discovery.servers
        # Access events cost a little per request: none are made when the level hides them.
        router.set_access_events(logging.getLogger("vllm_router.access").isEnabledFor(logging.INFO))
        router.set_debug_events(logging.getLogger("vllm_router.core").isEnabledFor(logging.DEBUG))
        pump = EventPump(router.drain_events).start()
        n = len(resolved.config.servers)
        discovering = resolved.config.settings.service_discovery != "static"
        plus = " and the pods discovered" if discovering else ""
        logging.getLogger("vllm_router").info(
            "vllm-router %s listening on http://%s:%d with %d server(s)%s", __version__, host, router.port, n, plus)
        if not logs_on_stdout:  # otherwise the record above says it, in the logs' own format
            out.print(f"vllm-router {__version__} listening on http://{host}:{router.port} "
                      f"({n} server{'s' if n != 1 else ''}{plus})", markup=False)

        def apply(config: object) -> None:
            servers.set_config(config)
            discovery.follow(config.settings)  # type: ignore[attr-defined]

        from vllm_router.reload import ConfigWatcher, install_sighup

        runner = None
        if handler is not None:
            from vllm_router.callbacks import CallbackRunner

            runner = CallbackRunner(router, handler).start()

        watcher = ConfigWatcher(router, resolved.config_path, resolve_now,
                                resolved.config.settings.config_reload_interval, apply).start()
        restore_sighup = install_sighup(watcher)
        from vllm_router.dashboard import Dashboard, StatsLogger, echo_stats_to_stdout, should_show_dashboard

        # A terminal gets the live panel (full screen, or inline beside the logs with --console);
        # Docker, k8s and pipes get plain stats lines instead.
        # Logs on stdout take the terminal: no panel over them.
        live = should_show_dashboard() and not logs_on_stdout
        dashboard = Dashboard(router, inline=console).start() if live else None
        stats = None
        if log_stats or not live:
            if not live and not console and not logs_on_stdout:
                echo_stats_to_stdout()
            stats = StatsLogger(router, log_stats_interval).start()
        try:
            code = serve(router, stop, flush=pump.stop)
        finally:
            if stats:
                stats.stop()
            if dashboard:
                dashboard.stop()
            if runner:
                runner.stop()
            restore_sighup()
            watcher.stop()
            discovery.stop()
            if tracer:
                tracer.stop()
            pump.stop()
    raise typer.Exit(code)


def _traces_url(value: str) -> str | None:
    """The OTLP/HTTP traces URL: as given, or with /v1/traces when it names no path."""
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return value.strip() if parts.path not in ("", "/") else value.strip().rstrip("/") + "/v1/traces"


@app.command("check-config")
def check_config(
    config: ConfigOption = Path("servers.toml"),
    probe: Annotated[
        bool, typer.Option("--probe", help="Also contact each server's /health and /v1/models.")
    ] = False,
) -> None:
    """Validate a configuration and show the servers and effective settings.

    Exits 1 listing every error (with its line and column); with --probe, also exits 1 when a
    server cannot be reached.
    """
    resolved = resolve(config)
    if not resolved.ok:
        _print_errors(resolved)
        raise typer.Exit(1)

    servers = Table(title=f"Servers in {config}", title_justify="left")
    for col in ("url", "name", "capacity", "weight", "models", "api key"):
        servers.add_column(col)
    for s in resolved.config.servers:
        servers.add_row(
            s.url,
            s.name,
            str(s.max_concurrent_requests),
            f"{s.weight:g}",
            ", ".join(s.models) or "(discovered)",
            "set" if s.api_key else "",
        )
    out.print(servers)

    settings = Table(title="Effective settings", title_justify="left")
    for col in ("key", "value", "rule"):
        settings.add_column(col)
    for row in settings_rows(resolved.config):
        settings.add_row(*row)
    out.print(settings)

    if probe:
        from vllm_router.probe import probe_servers, render_probe

        results = probe_servers(resolved.config)
        out.print(render_probe(results))
        down = [r for r in results if not r.reachable]
        if down:
            err.print(f"{len(down)} of {len(results)} servers unreachable", markup=False)
            raise typer.Exit(1)
    discovered = " (and the pods that --service-discovery k8s finds at run time)" \
        if resolved.config.settings.service_discovery != "static" else ""
    out.print(f"configuration OK: {len(resolved.config.servers)} servers{discovered}", markup=False)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address the router listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of the router.")] = 8888,
    threads: Annotated[Optional[int], typer.Option(min=1, max=256, show_default="the CPUs this process may use",
                                                   help="I/O threads.")] = None,
) -> None:
    """Start three simulated vLLM engines and the router in front of them (no GPU needed)."""
    from vllm_router.demo import run_demo

    try:
        code = run_demo(host, port, threads or usable_cpus())
    except RuntimeError as e:
        err.print(f"cannot start the demo: {e}", markup=False)
        raise typer.Exit(1)
    raise typer.Exit(code)


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8000,
    model: Annotated[str, typer.Option(help="The model name served.")] = "sim-model",
    ttft: Annotated[float, typer.Option(min=0, help="Seconds before the first token.")] = 0.05,
    token_delay: Annotated[float, typer.Option(min=0, help="Seconds between tokens.")] = 0.01,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per answer at most.")] = 16,
    max_seqs: Annotated[int, typer.Option(min=1, help="Requests generating at once; more wait.")] = 8,
    fail_status: Annotated[int, typer.Option(help="Answer every inference request with this status.")] = 0,
    die_after: Annotated[int, typer.Option(min=0, help="Drop the connection after N streamed tokens.")] = 0,
) -> None:
    """Run one simulated vLLM engine (for tests, demos and benchmarks)."""
    from vllm_router import _core
    from vllm_router.server import stop_signals, wait_for_stop

    engine = _core.SimEngine(host=host, port=port, model=model, ttft=ttft, token_delay=token_delay,
                             max_tokens=max_tokens, max_seqs=max_seqs, fail_status=fail_status,
                             die_after=die_after)
    try:
        bound = engine.start()
    except Exception as e:  # noqa: BLE001 - bind errors come from C++ as RuntimeError/OSError
        err.print(f"cannot start the engine: {e}", markup=False)
        raise typer.Exit(1)
    out.print(f"simulated engine serving {model} on http://{host}:{bound}", markup=False)
    with stop_signals() as stop:
        wait_for_stop(stop)
    engine.stop()


@app.command()
def version() -> None:
    """Print the version."""
    out.print(f"vllm-router {__version__}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
