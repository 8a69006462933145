"""Certificates made on the spot with Debian's `openssl` command: a CA, and server certificates
it signs for the names and addresses a test needs. Nothing is downloaded or kept."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerCert:
    ca: Path    # the CA's certificate: what a client trusts
    cert: Path  # the server's certificate, signed by the CA
    key: Path   # the server's private key


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_server_cert(folder: Path, names: tuple[str, ...] = ("IP:127.0.0.1", "DNS:localhost"),
                     common_name: str = "stand-in") -> ServerCert:
    """A fresh CA in `folder` and a certificate for `names` (subjectAltName entries) signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, request = folder / "server.crt", folder / "server.key", folder / "server.csr"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", "/CN=test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
             "-subj", f"/CN={common_name}")
    extensions = folder / "server.ext"
    extensions.write_text(f"subjectAltName={','.join(names)}\nbasicConstraints=CA:FALSE\n"
                          "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(extensions))
    return ServerCert(ca=ca, cert=cert, key=key)
