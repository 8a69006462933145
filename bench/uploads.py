"""Large uploads: the proxy's memory while many clients send big request bodies at once.

Twenty clients each POST a 60 MiB JSON body at the same time, through the router and through
nginx `proxy_pass` (which, like the router, buffers a large body to disk before passing it on),
to an nginx backend that reads and discards it. A second round stalls: thirty clients send 48
of 64 MiB and then wait `--stall` seconds before finishing. The proxy's resident memory is
sampled every 20 ms; the figure is its peak over each round. SPEC §7: RSS under 250 MB for the
twenty uploads.

    python bench/uploads.py [--quick] [--stall S]
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from typing import Any

from common import (Children, children_of, free_port, install_sigterm, log, rss_kb, save_json, start_router,
                    temp_dir, wait_healthy)
from nginx import MODEL, backend_conf, proxy_conf, start_nginx

MIB = 1 << 20


def json_body(size: int) -> bytes:
    head = b'{"model":"' + MODEL.encode() + b'","prompt":"'
    return head + b"a" * (size - len(head) - 2) + b'"}'


class RssPeak:
    """Samples the summed VmRSS of `pids` every 20 ms until stopped; keeps the peak (KiB)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak, self.before = pids, 0, sum(rss_kb(p) for p in pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(rss_kb(p) for p in self.pids))
            time.sleep(0.02)

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def upload(port: int, body: bytes, stall_at: int | None, stall_s: float, results: list[int]) -> None:
    """One POST of `body` on a raw socket; with `stall_at`, a pause of `stall_s` after that many
    bytes. Appends the answer's status (0: no answer)."""
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    status = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            s.sendall(head)
            view = memoryview(body)
            if stall_at is not None:
                s.sendall(view[:stall_at])
                time.sleep(stall_s)
                view = view[stall_at:]
            s.sendall(view)
            answer = b""
            while b"\r\n" not in answer:
                piece = s.recv(4096)
                if not piece:
                    break
                answer += piece
            if answer.startswith(b"HTTP/1.1 "):
                status = int(answer[9:12])
    except OSError:
        pass
    results.append(status)


def round_of(port: int, pids: list[int], clients: int, size: int, stall_at: int | None, stall_s: float) -> dict[str, Any]:
    body = json_body(size)
    results: list[int] = []
    threads = [threading.Thread(target=upload, args=(port, body, stall_at, stall_s, results)) for _ in range(clients)]
    start = time.monotonic()
    with RssPeak(pids) as rss:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return {"clients": clients, "body_mib": size / MIB, "stall_s": stall_s if stall_at is not None else 0,
            "seconds": round(time.monotonic() - start, 2), "ok": results.count(200), "statuses": sorted(set(results)),
            "rss_before_mb": round(rss.before / 1024, 1), "rss_peak_mb": round(rss.peak / 1024, 1)}


def run(quick: bool = False, stall: float | None = None) -> dict[str, Any]:
    clients, size = (5, 20 * MIB) if quick else (20, 60 * MIB)
    stalled, stalled_size = (5, 16 * MIB) if quick else (30, 64 * MIB)
    stall = stall if stall is not None else (2.0 if quick else 10.0)
    rows = []
    with temp_dir("uploads") as tmp, Children() as children:
        bport, pport = free_port(), free_port()
        start_nginx(children, tmp / "backend", backend_conf(tmp / "backend", bport), bport)
        proxy = start_nginx(children, tmp / "proxy", proxy_conf(tmp / "proxy", pport, bport, 1), pport)
        router, rport = start_router(children, tmp, threads=1, backends=[f"http://127.0.0.1:{bport}"], models=[MODEL])
        wait_healthy(rport, 1)
        targets = {"router": (rport, [router.pid]), "nginx": (pport, children_of(proxy.pid) or [proxy.pid])}
        for name, (port, pids) in targets.items():
            for label, n, sz, at in (("uploads", clients, size, None),
                                     ("stalled", stalled, stalled_size, stalled_size * 3 // 4)):
                log(f"uploads: {name} {label}: {n} x {sz // MIB} MiB" + (f", stalled {stall:.0f} s" if at else ""))
                row = round_of(port, pids, n, sz, at, stall)
                row.update({"target": name, "round": label})
                log(f"  {row['ok']}/{n} ok in {row['seconds']} s, RSS {row['rss_before_mb']} -> peak {row['rss_peak_mb']} MB")
                rows.append(row)
    return {"params": {"clients": clients, "body_mib": size / MIB, "stalled_clients": stalled,
                       "stalled_body_mib": stalled_size / MIB, "stall_s": stall}, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description="Proxy memory under many concurrent large uploads.")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller uploads")
    parser.add_argument("--stall", type=float, help="seconds each stalled upload waits midway")
    args = parser.parse_args()
    install_sigterm()
    data = run(args.quick, args.stall)
    path = save_json("uploads-quick" if args.quick else "uploads", data)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
