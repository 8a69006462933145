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


def make_ca(folder: Path) -> tuple[Path, Path]:
    """A fresh CA in `folder`: (certificate, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    if not ca.exists():
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
                 "-days", "2", "-subj", "/CN=test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return ca, ca_key


def make_server_cert(folder: Path, names: tuple[str, ...] = ("IP:127.0.0.1", "DNS:localhost"),
                     common_name: str = "stand-in", stem: str = "server", usage: str = "serverAuth") -> ServerCert:
    """The CA of `folder` (made if missing) and a certificate for `names` (subjectAltName
    entries) signed by it, as <stem>.crt and <stem>.key; usage clientAuth for a client's."""
    ca, ca_key = make_ca(folder)
    cert, key, request = folder / f"{stem}.crt", folder / f"{stem}.key", folder / f"{stem}.csr"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
             "-subj", f"/CN={common_name}")
    extensions = folder / f"{stem}.ext"
    extensions.write_text(f"subjectAltName={','.join(names)}\nbasicConstraints=CA:FALSE\n"
                          f"keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(extensions))
    return ServerCert(ca=ca, cert=cert, key=key)


def make_self_signed(folder: Path, names: tuple[str, ...] = ("IP:127.0.0.1",)) -> tuple[Path, Path]:
    """A certificate that is its own issuer: (certificate, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "self.crt", folder / "self.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", "/CN=self-signed", "-addext", f"subjectAltName={','.join(names)}")
    return cert, key


def make_expired_cert(folder: Path, names: tuple[str, ...] = ("IP:127.0.0.1",)) -> ServerCert:
    """A certificate from the CA of `folder` whose validity ended in 2020 (`openssl ca` takes
    explicit dates; `x509 -days` does not go backwards)."""
    ca, ca_key = make_ca(folder)
    work = folder / "expired-ca"
    work.mkdir(exist_ok=True)
    (work / "index.txt").write_text("")
    (work / "serial").write_text("1000\n")
    (work / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = test\n[test]\ndatabase = {work / 'index.txt'}\nnew_certs_dir = {work}\n"
        f"serial = {work / 'serial'}\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n")
    key, request, cert = folder / "expired.key", folder / "expired.csr", folder / "expired.crt"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", "/CN=expired")
    extensions = folder / "expired.ext"
    extensions.write_text(f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n")
    _openssl("ca", "-batch", "-notext", "-config", str(work / "ca.cnf"), "-cert", str(ca), "-keyfile", str(ca_key),
             "-in", str(request), "-out", str(cert), "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
             "-extfile", str(extensions))
    return ServerCert(ca=ca, cert=cert, key=key)
