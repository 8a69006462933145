"""Unit tests of `vllm_router.settings`: how the file, the run flags and --static-backends become
one effective configuration, and how every problem comes back as a readable string."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vllm_router import _core
from vllm_router.settings import SETTING_FLAGS, effective_dict, resolve, settings_rows, split_list

from conftest import FOUR_ERRORS_TOML

GOOD_TOML = """\
[servers]
servers = [
  { url = "http://gpu-1:8081", max_concurrent_requests = 8 },
  { url = "http://gpu-2:8081", models = ["llama-3.1-8b"], api_key = "sk-secret" },
]

[config]
request_timeout = 30
routing_logic = "roundrobin"
"""

BAD_TOML = FOUR_ERRORS_TOML


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "servers.toml"
    path.write_text(GOOD_TOML)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_TOML)
    return path


def urls(resolved) -> list[str]:
    return [s.url for s in resolved.config.servers]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        ("   ", []),
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        ("a,b , c", ["a", "b", "c"]),
        (" , a,,b, ", ["a", "b"]),
        ("http://h:1/v1,http://k:2", ["http://h:1/v1", "http://k:2"]),
    ],
)
def test_split_list(value, expected):
    assert split_list(value) == expected


def test_a_valid_file_resolves_with_its_servers_and_settings(good: Path):
    r = resolve(good)
    assert r.ok and r.errors == []
    assert r.file_used is True
    assert r.config_path == good
    assert urls(r) == ["http://gpu-1:8081", "http://gpu-2:8081"]
    assert r.config.servers[0].max_concurrent_requests == 8
    assert r.config.servers[1].max_concurrent_requests == 3  # SPEC default
    assert list(r.config.servers[1].models) == ["llama-3.1-8b"]
    assert r.config.settings.request_timeout == 30
    assert r.config.settings.routing_logic == "roundrobin"
    assert r.config.settings.health_check_interval == 10  # not in the file: the default


def test_config_path_may_be_a_string(good: Path):
    r = resolve(str(good))
    assert r.ok
    assert isinstance(r.config_path, Path) and r.config_path == good


def test_none_overrides_are_ignored(good: Path):
    r = resolve(good, overrides={key: None for key in SETTING_FLAGS})
    assert r.ok, r.errors
    assert r.config.settings.request_timeout == 30
    assert r.config.settings.routing_logic == "roundrobin"
    assert r.config.settings.session_key == "x-session-id"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("request_timeout", 7.5),
        ("health_check_interval", 2.0),
        ("config_reload_interval", 4.0),
        ("engine_stats_interval", 0.5),
        ("request_stats_window", 15.0),
        ("routing_logic", "session"),
        ("session_key", "x-user"),
    ],
)
def test_an_override_beats_the_file_and_leaves_the_rest(good: Path, key: str, value):
    r = resolve(good, overrides={key: value})
    assert r.ok, r.errors
    assert getattr(r.config.settings, key) == value
    if key != "request_timeout":
        assert r.config.settings.request_timeout == 30  # still the file's
    assert urls(r) == ["http://gpu-1:8081", "http://gpu-2:8081"]


@pytest.mark.parametrize("key", ["max_retries", "request_timout", "servers"])
def test_an_unknown_override_key_raises(good: Path, key: str):
    with pytest.raises(ValueError, match=key):
        resolve(good, overrides={key: 1})


@pytest.mark.parametrize(
    ("overrides", "flag", "fragment"),
    [
        ({"request_timeout": -1}, "--request-timeout", "greater than 0, got -1"),
        ({"health_check_interval": 0}, "--health-check-interval", "greater than 0, got 0"),
        ({"config_reload_interval": -2.5}, "--config-reload-interval", "greater than 0"),
        ({"engine_stats_interval": 0}, "--engine-stats-interval", "greater than 0"),
        ({"request_stats_window": -60}, "--request-stats-window", "greater than 0"),
        ({"session_key": "not a header"}, "--session-key", "HTTP header name"),
        ({"routing_logic": "prefix-aware"}, "--routing-logic", "not available yet"),
        ({"routing_logic": "roundrobbin"}, "--routing-logic", "did you mean 'roundrobin'"),
    ],
)
def test_a_bad_override_is_reported_under_its_flag(good: Path, overrides, flag, fragment):
    r = resolve(good, overrides=overrides)
    assert not r.ok
    assert len(r.errors) == 1, r.errors
    assert r.errors[0].startswith(flag + ": "), r.errors
    assert fragment in r.errors[0]


def test_every_bad_override_is_reported(good: Path):
    r = resolve(good, overrides={"request_timeout": 0, "health_check_interval": -1})
    assert len(r.errors) == 2, r.errors
    assert any(e.startswith("--request-timeout: ") for e in r.errors)
    assert any(e.startswith("--health-check-interval: ") for e in r.errors)


def test_file_errors_come_back_as_strings_with_their_lines(bad: Path):
    r = resolve(bad)
    assert not r.ok
    assert all(isinstance(e, str) for e in r.errors)
    assert len(r.errors) == 4, r.errors
    positions = []
    for e in r.errors:
        m = re.match(re.escape(str(bad)) + r":(\d+):(\d+): ", e)
        assert m, e
        positions.append(int(m.group(1)))
    assert positions == [3, 4, 7, 8]
    assert "ftp" in r.errors[0]
    assert "max_concurrent_requests" in r.errors[1]
    assert "did you mean 'health_check_interval'" in r.errors[2]
    assert "1.7" in r.errors[3]


def test_a_missing_file_is_one_error_saying_what_to_do(tmp_path: Path):
    missing = tmp_path / "nope.toml"
    r = resolve(missing)
    assert not r.ok
    assert r.file_used is False
    assert len(r.errors) == 1
    assert r.errors[0].startswith(f"{missing}: no such file")
    assert "--static-backends" in r.errors[0]
    assert "vllm-router demo" in r.errors[0]


def test_a_file_without_servers_is_an_error_unless_servers_are_optional(tmp_path: Path):
    path = tmp_path / "empty.toml"
    path.write_text("[servers]\nservers = []\n[config]\nrequest_timeout = 9\n")
    r = resolve(path)
    assert len(r.errors) == 1, r.errors
    assert "no servers configured" in r.errors[0]
    assert "--static-backends" in r.errors[0] and "vllm-router demo" in r.errors[0]

    relaxed = resolve(path, require_servers=False)
    assert relaxed.ok, relaxed.errors
    assert relaxed.config.settings.request_timeout == 9


def test_static_backends_replace_the_file_servers_and_keep_its_settings(good: Path):
    r = resolve(good, static_backends=["http://a:8000", "http://b:8001"], static_models=["m1", "m2"])
    assert r.ok, r.errors
    assert r.file_used is True
    assert urls(r) == ["http://a:8000", "http://b:8001"]
    assert [list(s.models) for s in r.config.servers] == [["m1"], ["m2"]]
    assert r.config.settings.request_timeout == 30  # the file still supplies the settings
    assert r.config.settings.routing_logic == "roundrobin"


def test_static_backends_need_no_file(tmp_path: Path):
    r = resolve(tmp_path / "absent.toml", static_backends=["http://a:8000"])
    assert r.ok, r.errors
    assert r.file_used is False
    assert urls(r) == ["http://a:8000"]
    assert list(r.config.servers[0].models) == []  # discovered later
    assert r.config.servers[0].max_concurrent_requests == 3
    assert r.config.settings.request_timeout == 120  # C++ default


def test_static_backends_and_overrides_combine(tmp_path: Path):
    r = resolve(tmp_path / "absent.toml", overrides={"request_timeout": 12.0}, static_backends=["http://a:1"])
    assert r.ok, r.errors
    assert r.config.settings.request_timeout == 12.0


@pytest.mark.parametrize(
    ("backends", "models", "n_models", "n_backends"),
    [
        (["http://a:1", "http://b:2"], ["m1"], 1, 2),
        (["http://a:1"], ["m1", "m2", "m3"], 3, 1),
    ],
)
def test_static_models_must_match_static_backends(tmp_path: Path, backends, models, n_models, n_backends):
    r = resolve(tmp_path / "absent.toml", static_backends=backends, static_models=models)
    assert not r.ok
    assert r.errors == [
        f"--static-models: {n_models} model(s) for {n_backends} backend(s); "
        "give one model per backend, in the same order"
    ]


@pytest.mark.parametrize(
    ("backends", "index", "fragment"),
    [
        (["ftp://a:1"], 0, "has scheme 'ftp'; only http:// and https://"),
        (["a:1"], 0, "must start with http:// or https://"),
        (["http://a:1", "gpu-2:8000"], 1, "http"),
        (["http://a:1", "http://a:1"], 1, "duplicate server"),
        (["http://a:99999"], 0, "invalid port"),
    ],
)
def test_a_bad_static_backend_is_reported_under_the_flag(tmp_path: Path, backends, index, fragment):
    r = resolve(tmp_path / "absent.toml", static_backends=backends)
    assert not r.ok
    assert len(r.errors) == 1, r.errors
    assert r.errors[0].startswith(f"--static-backends: servers[{index}].url: "), r.errors
    assert fragment in r.errors[0]


def test_effective_dict_masks_api_keys_and_carries_extras(good: Path):
    r = resolve(good)
    d = effective_dict(r.config, host="127.0.0.1", port=9000)
    assert d["host"] == "127.0.0.1" and d["port"] == 9000
    assert [s["api_key"] for s in d["servers"]] == ["", "***"]
    assert "sk-secret" not in repr(d)
    assert d["servers"][1]["models"] == ["llama-3.1-8b"]
    assert d["config"]["request_timeout"] == 30
    assert set(d["config"]) == {name for name, _type, _rule in _core.setting_specs()}


def test_settings_rows_show_every_setting_with_its_value(good: Path):
    rows = settings_rows(resolve(good).config)
    assert [name for name, _v, _r in rows] == [name for name, _t, _r in _core.setting_specs()]
    values = {name: value for name, value, _rule in rows}
    assert values["request_timeout"] == "30"
    assert values["routing_logic"] == "roundrobin"
    assert values["health_check_min_success_rate"] == "0.8"
    assert all(rule for _n, _v, rule in rows)


def test_bad_overrides_are_reported_beside_the_file_errors(bad: Path):
    resolved = resolve(bad, overrides={"request_timeout": -1})
    assert len(resolved.errors) == 5, resolved.errors
    assert sum("--request-timeout" in e for e in resolved.errors) == 1
    # The file's own errors are not repeated without their positions.
    assert all(re.search(r":\d+:\d+: ", e) or e.startswith("--") for e in resolved.errors), resolved.errors


def test_static_models_without_static_backends_is_an_error(good: Path):
    resolved = resolve(good, static_models=["llama"])
    assert any("--static-models: needs --static-backends" in e for e in resolved.errors), resolved.errors
