"""nginx for the benchmarks: the stand-in backend (a fixed chat completion for every POST) and
the reference reverse proxy (`proxy_pass` to a keep-alive upstream). Each instance gets its own
prefix folder holding its config, pid file and error log, and runs in the foreground
(`daemon off;`) as a child of the benchmark, never as a system service.

Run alone to try it: `python bench/nginx.py` starts a backend and a proxy in front of it, sends
one request through each and stops them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

from common import Children, http_get, install_sigterm, log, pinned, temp_dir, wait_port

MODEL = "sim-model"

# What a vLLM server answers to a small non-streaming chat completion (max_tokens=1).
CHAT_COMPLETION = {
    "id": "chatcmpl-bench0000000000000000",
    "object": "chat.completion",
    "created": 1767225600,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                 "logprobs": None, "finish_reason": "length", "stop_reason": None}],
    "usage": {"prompt_tokens": 9, "total_tokens": 10, "completion_tokens": 1},
}


def nginx_binary() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        raise RuntimeError("nginx not found: run `make bench-deps` (Debian package nginx-light)")
    return path


def _nginx_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _common(prefix: Path, workers: int) -> str:
    # Run as root, the workers would drop to `nobody`, which cannot write the body buffers into
    # the benchmark's private temporary folder: they stay with the user that started them.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""daemon off;
{user}master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 16384;
    multi_accept on;
}}
"""


def _http_common(prefix: Path) -> str:
    # Temp paths inside the prefix: the default ones (/var/lib/nginx) may not be writable.
    return f"""    access_log off;
    client_max_body_size 0;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""


def backend_conf(prefix: Path, port: int, workers: int = 1) -> str:
    """A backend answering every inference path with the fixed completion; /health 200 and an
    empty /metrics, so the router's health checks and scrapes succeed."""
    body = json.dumps(CHAT_COMPLETION, separators=(",", ":"))
    return _common(prefix, workers) + f"""http {{
{_http_common(prefix)}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /health {{ return 200 ''; }}
        location = /metrics {{ default_type text/plain; return 200 '# no metrics\\n'; }}
        location = /v1/models {{
            default_type application/json;
            return 200 '{{"object":"list","data":[{{"id":"{MODEL}","object":"model","owned_by":"bench"}}]}}';
        }}
        location / {{
            default_type application/json;
            return 200 {_nginx_quote(body)};
        }}
    }}
}}
"""


def proxy_conf(prefix: Path, port: int, upstream_port: int, workers: int) -> str:
    """The reference reverse proxy as commonly deployed: keep-alive upstream pool, HTTP/1.1 to
    the upstream with the Connection header cleared; everything else at nginx's defaults."""
    return _common(prefix, workers) + f"""http {{
{_http_common(prefix)}
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(children: Children, prefix: Path, conf: str, port: int,
                cpus: str | None = None) -> subprocess.Popen:
    """Writes the config into `prefix` and runs nginx in the foreground; returns the master."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)  # nginx opens <prefix>/logs/error.log before reading the conf
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    argv = pinned(cpus, [nginx_binary(), "-p", str(prefix), "-c", str(conf_path), "-e", str(prefix / "error.log")])
    proc = children.start(argv, log=prefix / "stdout.log")
    try:
        wait_port(port, proc=proc)
    except RuntimeError as e:
        err = (prefix / "error.log").read_text(errors="replace") if (prefix / "error.log").exists() else ""
        raise RuntimeError(f"{e}\n{err[-2000:]}") from None
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; this is always quick")
    parser.parse_args()
    install_sigterm()
    from common import free_port

    with temp_dir("nginx") as tmp, Children() as children:
        bport, pport = free_port(), free_port()
        start_nginx(children, tmp / "backend", backend_conf(tmp / "backend", bport), bport)
        start_nginx(children, tmp / "proxy", proxy_conf(tmp / "proxy", pport, bport, 1), pport)
        for name, port in (("backend", bport), ("proxy", pport)):
            status, body = http_get(port, "/v1/chat/completions")
            log(f"{name} on {port}: {status} {body[:80]!r}")


if __name__ == "__main__":
    main()
