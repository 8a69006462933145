"""The effective configuration: one place that applies flag > env var > file > default.

Typer already resolves "flag over env var" for each option (an option that names an env var reads
it when the flag is absent). What reaches :func:`resolve` is therefore ``None`` for an option the
user set neither way; only then does the file's value (or, without one, the C++ default) stand.
Every value, wherever it came from, is then checked by the C++ rule table
(:func:`vllm_router._core.validate_config`), so a rule exists once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_router import _core

#: [config] keys that a `run` flag may override, with the flag that does it.
SETTING_FLAGS: dict[str, str] = {
    "health_check_interval": "--health-check-interval",
    "config_reload_interval": "--config-reload-interval",
    "request_timeout": "--request-timeout",
    "engine_stats_interval": "--engine-stats-interval",
    "request_stats_window": "--request-stats-window",
    "routing_logic": "--routing-logic",
    "session_key": "--session-key",
    "service_discovery": "--service-discovery",
    "k8s_namespace": "--k8s-namespace",
    "k8s_label_selector": "--k8s-label-selector",
    "k8s_port": "--k8s-port",
}


@dataclass
class Resolved:
    """The outcome of resolution: a config to run with, or the complete list of what is wrong."""

    config: Any  # _core.Config
    config_path: Path
    file_used: bool
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def split_list(value: str | None) -> list[str]:
    """`a,b , c` -> ['a', 'b', 'c']; None or blank -> []."""
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def resolve(
    config_path: Path,
    overrides: dict[str, Any] | None = None,
    static_backends: list[str] | None = None,
    static_models: list[str] | None = None,
    require_servers: bool = True,
) -> Resolved:
    """Builds the effective config from the file, the overrides and the static backends.

    ``overrides`` maps [config] keys to values; ``None`` values mean "not given" and are ignored.
    With ``static_backends`` the servers come from them and the file (if present) still supplies
    the settings; without them (and without discovery asked for) a missing file is an error.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(SETTING_FLAGS)
    if unknown:
        raise ValueError(f"not an overridable setting: {sorted(unknown)}")

    config_path = Path(config_path)
    errors: list[str] = []
    file_used = False
    # Pods may be the whole fleet: with discovery asked for on the command line, no file is needed.
    discovering = overrides.get("service_discovery", "static") != "static"
    if config_path.exists() or not (static_backends or discovering):
        config, file_errors = _core.load_config(str(config_path))
        file_used = config_path.exists()
        if not file_used and not static_backends:
            return Resolved(
                config,
                config_path,
                False,
                [
                    f"{config_path}: no such file. Write one (see examples/servers.toml), "
                    "pass --static-backends URL,URL, or run `vllm-router demo` to try the router "
                    "on simulated engines"
                ],
            )
        errors += [str(e) for e in file_errors]
    else:
        config = _core.Config()

    settings = config.settings
    for key, value in overrides.items():
        setattr(settings, key, value)
    config.settings = settings

    if static_backends:
        if static_models and len(static_models) != len(static_backends):
            errors.append(
                f"--static-models: {len(static_models)} model(s) for {len(static_backends)} "
                "backend(s); give one model per backend, in the same order"
            )
        servers = []
        for i, url in enumerate(static_backends):
            models = [static_models[i]] if static_models and i < len(static_models) else []
            servers.append(_core.ServerConfig(url, models=models))
        config.servers = servers

    if static_models and not static_backends:
        errors.append("--static-models: needs --static-backends (one model per backend, same order)")

    checked = _core.validate_config(config, require_servers)
    if errors:
        # The file's own problems are already listed with their positions: add only what the
        # flags and environment brought in, so that every error is reported once.
        overridden = {f"config.{key}" for key in overrides}
        checked = [
            e for e in checked
            if e.key in overridden or (static_backends and e.key.startswith("servers["))
        ]
    errors += [_describe(e) for e in checked]
    if not errors:
        # The files exist: do they hold what OpenSSL needs (PEM, a key that fits its certificate)?
        errors += _core.check_tls(config)
    return Resolved(config, config_path, file_used, errors)


def _describe(error: Any) -> str:
    """Names the flag behind a rule violation that did not come from the file."""
    key = error.key.removeprefix("config.")
    if key in SETTING_FLAGS:
        return f"{SETTING_FLAGS[key]}: {error.message}"
    if key.startswith("servers[") and error.line == 0:
        return f"--static-backends: {key}: {error.message}"
    return str(error)


def settings_rows(config: Any) -> list[tuple[str, str, str]]:
    """(key, value, rule) for every [config] setting, in documentation order."""
    return [(name, config.settings.value(name), rule) for name, _type, rule in _core.setting_specs()]


def effective_dict(config: Any, **extra: Any) -> dict[str, Any]:
    """The effective configuration as plain data (for --print-config); api keys are masked."""
    settings: dict[str, Any] = {}
    for name, type_, _rule in _core.setting_specs():
        value = getattr(config.settings, name)
        settings[name] = ("***" if value else "") if name.endswith("api_key") else value
    servers = [
        {
            "url": s.url,
            "max_concurrent_requests": s.max_concurrent_requests,
            "models": list(s.models),
            "weight": s.weight,
            "api_key": "***" if s.api_key else "",
            "name": s.name,
        }
        for s in config.servers
    ]
    return {**extra, "servers": servers, "config": settings}
