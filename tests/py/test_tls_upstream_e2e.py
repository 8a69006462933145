"""https:// servers: the router speaks TLS to them with OpenSSL (data plane, health checks,
scrapes, model discovery), verifies them by default, says why a handshake failed, and
`check-config --probe` applies the same rules. Certificates are made with `openssl` by the test
(tests/support/certs.py); the TLS server is a TLS proxy in front of a simulated engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from conftest import wait_until
from support.certs import make_expired_cert, make_self_signed, make_server_cert
from support.tls_backend import TlsBackend
from vllm_router import _core
from vllm_router.probe import probe_one

MODEL = "sim-model"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("certs")
    server = make_server_cert(folder)
    self_cert, self_key = make_self_signed(folder)
    return {
        "server": server,
        "other_host": make_server_cert(folder, names=("DNS:other.example",), stem="other"),
        "expired": make_expired_cert(folder),
        "self_signed": (self_cert, self_key),
        "client": make_server_cert(folder, names=("DNS:vllm-router",), stem="client", usage="clientAuth"),
    }


@pytest.fixture
def tls_routers(engine_factory) -> Iterator[Any]:
    made: list[Any] = []
    backends: list[TlsBackend] = []

    def make(cert: Path, key: Path, client_ca: Path | None = None, **tls: Any) -> tuple[Any, TlsBackend, Any]:
        engine = engine_factory()
        backend = TlsBackend(engine.port, cert, key, client_ca)
        backends.append(backend)
        config = _core.Config()
        server = _core.ServerConfig(backend.url, max_concurrent_requests=4)
        for k, v in tls.items():
            setattr(server, k, str(v) if isinstance(v, Path) else v)
        config.servers = [server]
        s = config.settings
        s.health_check_interval = 0.3
        s.health_check_timeout = 2
        s.retry_delay = 0.01
        config.settings = s
        assert not _core.validate_config(config, True)
        router = _core.Router(config, "127.0.0.1", 0, 1, "test")
        router.start()
        made.append(router)
        return router, backend, config

    yield make
    for r in made:
        r.stop()
    for b in backends:
        b.stop()


def health_of(router: Any) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{router.port}/health", timeout=5).json()["servers"][0]


def test_chat_and_streams_go_to_an_https_server_verified_by_its_ca(certs, tls_routers):
    c = certs["server"]
    router, backend, config = tls_routers(c.cert, c.key, tls_ca_file=c.ca)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{router.port}/v1", api_key="x", max_retries=0)
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert chat.choices[0].message.content
    chunks = list(client.completions.create(model=MODEL, prompt="x", max_tokens=4, stream=True))
    assert len(chunks) >= 2
    h = health_of(router)
    assert h["healthy"] and h["tls_verify"] is True and h["last_error"] is None
    assert h["supported_models"] == [MODEL]  # model discovery over TLS
    assert wait_until(lambda: next(b for b in router.backends())["scraped"], timeout=5)  # scrapes too
    # Pooled TLS connections are reused: far fewer handshakes than requests.
    for _ in range(20):
        client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert backend.handshakes < 20, backend.handshakes
    # New connections (each health check opens one) resume the last session.
    assert wait_until(lambda: backend.resumed >= 2, timeout=5), (backend.handshakes, backend.resumed)
    assert probe_one(config.servers[0], settings=config.settings).reachable


@pytest.mark.parametrize(
    "case, why",
    [
        ("self_signed", "certificate verify failed: self-signed certificate"),
        ("unknown_ca", "certificate verify failed: unable to get local issuer certificate"),
        ("other_host", "hostname mismatch"),
        ("expired", "certificate verify failed: certificate has expired"),
    ],
)
def test_a_certificate_the_router_cannot_trust_is_refused_with_its_reason(certs, tls_routers, case, why):
    if case == "self_signed":
        cert, key = certs["self_signed"]
        tls: dict[str, Any] = {}  # the system's store: a self-signed certificate is in none
    elif case == "unknown_ca":
        cert, key = certs["server"].cert, certs["server"].key
        tls = {}  # our CA is in no system store
    else:
        cert, key = certs[case].cert, certs[case].key
        tls = {"tls_ca_file": certs[case].ca}
    router, backend, config = tls_routers(cert, key, **tls)
    assert wait_until(lambda: not health_of(router)["healthy"], timeout=5)
    h = health_of(router)
    assert h["last_error"] and why in h["last_error"], h
    r = httpx.post(f"http://127.0.0.1:{router.port}/v1/completions", json={"model": MODEL, "prompt": "x"}, timeout=10)
    assert r.status_code in (502, 503)
    events = [e["message"] for e in router.drain_events()]
    assert any(why in m and "health check of" in m for m in events), events
    # The probe agrees: unreachable, for the same reason.
    probed = probe_one(config.servers[0], settings=config.settings)
    assert not probed.reachable and why.split(":")[-1].strip() in probed.error.replace("IP address mismatch", "hostname mismatch"), probed.error


def test_tls_verify_false_accepts_any_certificate_and_says_so(certs, tls_routers):
    cert, key = certs["self_signed"]
    router, backend, config = tls_routers(cert, key, tls_verify=False)
    assert wait_until(lambda: health_of(router)["healthy"] and health_of(router)["supported_models"], timeout=5)
    assert health_of(router)["tls_verify"] is False
    r = httpx.post(f"http://127.0.0.1:{router.port}/v1/completions", json={"model": MODEL, "prompt": "x"}, timeout=10)
    assert r.status_code == 200
    events = [e for e in router.drain_events() if "tls_verify = false" in e["message"]]
    assert events and events[0]["level"] == "WARNING"
    assert probe_one(config.servers[0], settings=config.settings).reachable


def test_mutual_tls_with_the_client_certificate_and_refused_without(certs, tls_routers):
    c, client = certs["server"], certs["client"]
    with_cert, _, config = tls_routers(c.cert, c.key, client_ca=c.ca, tls_ca_file=c.ca,
                                       tls_cert_file=client.cert, tls_key_file=client.key)
    assert wait_until(lambda: health_of(with_cert)["healthy"] and health_of(with_cert)["supported_models"], timeout=5)
    r = httpx.post(f"http://127.0.0.1:{with_cert.port}/v1/completions", json={"model": MODEL, "prompt": "x"}, timeout=10)
    assert r.status_code == 200
    assert probe_one(config.servers[0], settings=config.settings).reachable
    without, _, config = tls_routers(c.cert, c.key, client_ca=c.ca, tls_ca_file=c.ca)
    assert wait_until(lambda: not health_of(without)["healthy"], timeout=5)
    assert health_of(without)["last_error"], health_of(without)
    assert not probe_one(config.servers[0], settings=config.settings).reachable


def test_tls_files_are_checked_before_the_router_runs(certs, tmp_path):
    from vllm_router.settings import resolve

    c = certs["server"]
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    cases = {
        f'tls_ca_file = "{tmp_path / "missing.pem"}"': "cannot be read",
        f'tls_ca_file = "{not_pem}"': "holds no usable PEM certificate",
        f'tls_cert_file = "{c.cert}"': "go together",
        f'tls_cert_file = "{c.cert}", tls_key_file = "{certs["client"].key}"': "is not the key of",
        "tls_verify = 1": "tls_verify must be true or false",
    }
    for fields, why in cases.items():
        path = tmp_path / "servers.toml"
        path.write_text(f'[servers]\nservers = [{{ url = "https://127.0.0.1:1", {fields} }}]\n')
        resolved = resolve(path)
        assert any(why in e for e in resolved.errors), (fields, resolved.errors)


def test_a_reload_that_tightens_trust_drops_the_pooled_connections(certs, tls_routers):
    cert, key = certs["self_signed"]
    router, backend, config = tls_routers(cert, key, tls_verify=False)
    url = f"http://127.0.0.1:{router.port}/v1/completions"
    with httpx.Client(timeout=10) as client:
        assert wait_until(lambda: client.post(url, json={"model": MODEL, "prompt": "x"}).status_code == 200, timeout=5)
        server = config.servers[0]
        server.tls_verify = True
        config.servers = [server]
        router.update_config(config)
        assert wait_until(lambda: health_of(router)["tls_verify"] is True, timeout=5)
        # At once (before any health check could mark the server down): the pooled connection,
        # opened without verification, must not carry on under the new settings.
        assert client.post(url, json={"model": MODEL, "prompt": "x"}).status_code != 200


def test_an_encrypted_key_is_refused_not_prompted_for(certs, tmp_path):
    import subprocess

    from vllm_router.settings import resolve

    c = certs["client"]
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(c.key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
                   check=True, capture_output=True)
    path = tmp_path / "servers.toml"
    path.write_text(f'[servers]\nservers = [{{ url = "HTTPS://127.0.0.1:1", tls_cert_file = "{c.cert}", '
                    f'tls_key_file = "{encrypted}" }}]\n')
    resolved = resolve(path)  # would block on a terminal prompt if OpenSSL asked for the passphrase
    assert any("is not an unencrypted PEM private key" in e for e in resolved.errors), resolved.errors
