"""Helpers shared by the benchmark scripts: child processes that are always cleaned up, free
ports, readiness waits, per-process RSS and CPU time from /proc, wrk runs, and the machine's
description.

Every script runs its children through `Children`: each child gets its own process group, and
the group is terminated (then killed) when the `with` block ends, whether by success, an
exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
VENV_BIN = Path(sys.executable).parent
ROUTER_CMD = [str(VENV_BIN / "vllm-router")] if (VENV_BIN / "vllm-router").exists() else [
    sys.executable, "-m", "vllm_router"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


class Stop(Exception):
    """SIGTERM, turned into an exception so that `finally` blocks run."""


def install_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise Stop(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def raise_nofile(want: int = 1 << 20) -> int:
    """Raises the open-file limit as far as allowed (root may also raise the hard limit); children
    inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except OSError:
        nr_open = hard
    target = min(want, nr_open)
    if hard != resource.RLIM_INFINITY and hard < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
        except (ValueError, OSError):
            pass
    soft_target = hard if hard != resource.RLIM_INFINITY else target
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft_target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def core_module_stamp() -> float:
    """When the compiled router module was last written. A rebuild that overwrites it under a
    running process can crash that process: a changed stamp tells such a crash apart."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("vllm_router._core")
        return os.stat(spec.origin).st_mtime if spec and spec.origin else 0.0
    except (ImportError, OSError):
        return 0.0


def free_port() -> int:
    """A port free right now on 127.0.0.1 (for programs that cannot be told port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")
            time.sleep(0.05)


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """A minimal GET on 127.0.0.1 (no dependency, no proxy settings consulted)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def group_cpu_seconds(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


class CpuSampler:
    """Samples the CPU time of some processes every `every` s on a thread; `rate()` is the CPU
    time per wall second over the samples (robust to a process that dies at the end)."""

    def __init__(self, pids: Sequence[int], every: float = 0.2) -> None:
        import threading

        self.pids = list(pids)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            alive = [p for p in self.pids if Path(f"/proc/{p}/stat").exists()]
            if len(alive) == len(self.pids):
                self.samples.append((time.monotonic(), group_cpu_seconds(self.pids)))
            if self._stop.wait(self.every):
                break

    def __enter__(self) -> "CpuSampler":
        if self.pids:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self.pids:
            self._thread.join()

    def rate(self) -> float | None:
        good = self.samples
        # A dying process may report less CPU than before: keep the increasing prefix.
        for i in range(1, len(good)):
            if good[i][1] < good[i - 1][1]:
                good = good[:i]
                break
        if len(good) < 2 or good[-1][0] <= good[0][0]:
            return None
        return (good[-1][1] - good[0][1]) / (good[-1][0] - good[0][0])


def children_of(pid: int) -> list[int]:
    """Direct children of a process (nginx workers under their master)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out += [int(x) for x in text.split()]
    except OSError:
        pass
    return out


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    """argv run under `taskset -c cpus` when pinning is asked for and available."""
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *argv]
    return argv


class Children:
    """Starts child processes in their own process groups and ends them all on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self._files: list[Any] = []
        # How each child ended: {"pid", "argv0", "code", "died_early"}; died_early means it had
        # exited (crashed?) before the benchmark asked it to stop. Code -11 is a segfault.
        self.exits: list[dict[str, Any]] = []
        self.stamp = core_module_stamp()

    def __enter__(self) -> "Children":
        return self

    def start(self, argv: list[str], log: Path | None = None, **kwargs: Any) -> subprocess.Popen:
        out: Any = subprocess.DEVNULL
        if log is not None:
            out = open(log, "wb")
            self._files.append(out)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> int | None:
        died_early = proc.poll() is not None
        if not died_early:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in the group (nginx workers, a stuck child) is killed.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.procs:
            self.procs.remove(proc)
            self.exits.append({"pid": proc.pid, "argv": " ".join(map(str, proc.args[:4])),
                               "code": proc.returncode, "died_early": died_early,
                               "module_replaced": core_module_stamp() != self.stamp})
            if died_early or (proc.returncode is not None and proc.returncode < 0
                              and proc.returncode not in (-signal.SIGTERM, -signal.SIGKILL)):
                log(f"warning: child {proc.pid} ({' '.join(map(str, proc.args[:3]))}) ended with "
                    f"{proc.returncode}{' before it was stopped' if died_early else ''}")
        return proc.returncode

    def close(self) -> None:
        # Ignore further Ctrl-C / SIGTERM while cleaning up, so cleanup itself is not interrupted.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for proc in reversed(list(self.procs)):
                self.stop(proc)
            for f in self._files:
                f.close()
            self._files.clear()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"vllm-router-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_for_line(path: Path, pattern: str, proc: subprocess.Popen, timeout: float = 20.0) -> re.Match:
    """Waits until a child's log file holds a line matching `pattern`."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        m = rx.search(text)
        if m:
            return m
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}:\n{text[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for /{pattern}/ in {path}:\n{text[-2000:]}")
        time.sleep(0.05)


# ---------------------------------------------------------------- the router and the engines

def start_router(children: Children, workdir: Path, *, threads: int, backends: Sequence[str] = (),
                 models: Sequence[str] = (), config: Path | None = None, routing: str | None = None,
                 cpus: str | None = None, name: str = "router",
                 extra: Sequence[str] = (), command: Sequence[str] | None = None) -> tuple[subprocess.Popen, int]:
    """`vllm-router run` as its own process on 127.0.0.1 and a port it picks; returns (proc, port).
    `command`: another build's vllm-router (a baseline), instead of this checkout's.

    Logs go to a folder in `workdir` at WARNING (nginx runs with access_log off: same footing)."""
    log_dir = workdir / f"{name}-logs"
    log_dir.mkdir(exist_ok=True)
    argv = [*(command or ROUTER_CMD), "run", "--host", "127.0.0.1", "--port", "0", "--threads", str(threads),
            "--log-dir", str(log_dir), "--log-level", "WARNING"]
    if config is not None:
        argv += ["--config", str(config)]
    else:
        argv += ["--config", str(workdir / "no-such-servers.toml")]
    if backends:
        argv += ["--static-backends", ",".join(backends), "--static-models", ",".join(models)]
    if routing:
        argv += ["--routing-logic", routing]
    argv += list(extra)
    out = workdir / f"{name}.out"
    proc = children.start(pinned(cpus, argv), log=out, cwd=workdir)
    m = wait_for_line(out, r"listening on http://127\.0\.0\.1:(\d+)", proc)
    port = int(m.group(1))
    wait_port(port, proc=proc)
    return proc, port


def wait_healthy(port: int, servers: int, timeout: float = 15.0) -> None:
    """Until the router's /health says every server is healthy."""
    deadline = time.monotonic() + timeout
    body = b""
    while time.monotonic() < deadline:
        try:
            status, body = http_get(port, "/health")
            if status == 200 and json.loads(body).get("healthy_servers") == servers:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"router on port {port} not healthy after {timeout:g} s: {body[:500]!r}")


def start_engines(children: Children, workdir: Path, specs: list[dict[str, Any]], *,
                  cpus: str | None = None, name: str = "engines") -> tuple[subprocess.Popen, list[int]]:
    """Simulated engines (bench/engines.py) in one separate process; returns (proc, ports)."""
    out = workdir / f"{name}.out"
    argv = [sys.executable, str(BENCH / "engines.py"), json.dumps(specs)]
    proc = children.start(pinned(cpus, argv), log=out, cwd=workdir)
    m = wait_for_line(out, r"PORTS (\[.*\])", proc)
    return proc, json.loads(m.group(1))


# ---------------------------------------------------------------- wrk

WRK_MARK = "WRK_JSON "


def run_wrk(url: str, *, connections: int, duration: float, threads: int = 1, script: Path | None = None,
            cpus: str | None = None, timeout_s: int = 10) -> dict[str, Any]:
    """One wrk run; returns the JSON that bench/chat.lua's done() prints, plus the raw text."""
    script = script or BENCH / "chat.lua"
    threads = max(1, min(threads, connections))
    seconds = max(1, int(round(duration)))  # wrk takes whole seconds
    argv = pinned(cpus, ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                         "--latency", "--timeout", f"{timeout_s}s", "-s", str(script), url])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    text = proc.stdout
    line = next((ln for ln in text.splitlines() if ln.startswith(WRK_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-2000:]} {proc.stderr[-2000:]}")
    result = json.loads(line[len(WRK_MARK):])
    result["raw"] = "\n".join(ln for ln in text.splitlines() if not ln.startswith(WRK_MARK))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6) if result["duration_us"] else 0.0
    result["errors_total"] = sum(result["errors"].values())
    return result


# ---------------------------------------------------------------- reporting helpers

def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank, of an unsorted sequence (nan if empty)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def _cmd_version(argv: list[str], pattern: str = r"[\d][\w.\-+~:]*") -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        m = re.search(pattern, p.stdout + p.stderr)
        return m.group(0) if m else "?"
    except (OSError, subprocess.SubprocessError):
        return "not found"


def machine_info() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                          if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        mem_kb = 0
    try:
        from importlib.metadata import version as dist_version

        router_version = dist_version("vllm-router")
    except Exception:  # noqa: BLE001 - not installed: say so rather than fail
        router_version = "?"
    virt = ""
    try:
        p = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, timeout=5)
        virt = p.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        vm = "hypervisor" in Path("/proc/cpuinfo").read_text()
    except OSError:
        vm = False
    virt = ", ".join(x for x in ("virtual machine" if vm else "", f"container: {virt}" if virt and virt != "none" else "")
                     if x) or "bare metal"
    return {
        "cpu_model": model,
        "cores": CORES,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "virtualization": virt,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "vllm_router": router_version,
        "nginx": _cmd_version(["nginx", "-v"], r"nginx/[\d.]+"),
        "wrk": _cmd_version(["wrk", "-v"], r"wrk [^\s]+"),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def save_json(name: str, data: Any) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
