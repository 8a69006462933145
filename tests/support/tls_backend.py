"""A TLS server in front of a plain engine, as a TLS-terminating proxy in front of vLLM is: it
completes the handshake with the certificate it is given (and, with `client_ca`, demands a client
certificate signed by that CA), then relays bytes both ways to the engine's port."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class TlsBackend:
    def __init__(self, target_port: int, cert: Path, key: Path, client_ca: Path | None = None,
                 host: str = "127.0.0.1") -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(cafile=str(client_ca))
        self.target_port = target_port
        self.handshakes = 0
        self.resumed = 0  # handshakes that resumed an earlier session
        self.failed_handshakes = 0
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"https://{host}:{self.port}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.failed_handshakes += 1
            raw.close()
            return
        self.handshakes += 1
        self.resumed += conn.session_reused
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            conn.close()
            return
        threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
        self._pump(conn, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
