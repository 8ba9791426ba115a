"""Certificates for the test control planes, made with the ``openssl`` command.

One CA per lab signs every certificate (the agents' API servers, their etcd, their admin users,
the host's API server): a shared CA saves most of the key generation an agent's start would
otherwise pay. Keys are ECDSA P-256, which openssl makes in milliseconds (an RSA-2048 key takes
about half a second on a loaded 2-core machine, and a control plane needs several).
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "30"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def new_key(path: Path) -> Path:
    """An ECDSA P-256 private key in PKCS#8 PEM (what Go's and Python's parsers take)."""
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    path.chmod(0o600)
    return path


def public_key(key: Path) -> Path:
    """The public half of ``key`` beside it (``.pub``): what kube-apiserver's
    ``--service-account-key-file`` reads to verify tokens."""
    out = key.with_suffix(".pub")
    _openssl("ec", "-in", str(key), "-pubout", "-out", str(out))
    return out


class CertificateAuthority:
    """A self-signed CA in ``folder`` that issues server and client certificates."""

    def __init__(self, folder: Path, name: str = "gpualloc-test-ca") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        key = new_key(folder / "ca.key")
        cert = folder / "ca.crt"
        _openssl(
            "req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", DAYS,
            "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
        self.pair = KeyPair(cert, key)

    def issue(
        self,
        folder: Path,
        name: str,
        common_name: str,
        *,
        organisation: str | None = None,
        ips: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
    ) -> KeyPair:
        """A certificate for ``common_name`` (``organisation``: the Kubernetes group) valid for
        both server and client use, with ``ips`` and ``dns`` as subject alternative names."""
        folder.mkdir(parents=True, exist_ok=True)
        key = new_key(folder / f"{name}.key")
        csr = folder / f"{name}.csr"
        subject = f"/CN={common_name}" + (f"/O={organisation}" if organisation else "")
        _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", subject)
        ext = folder / f"{name}.ext"
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth,clientAuth",
        ]
        sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in dns]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        cert = folder / f"{name}.crt"
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.pair.cert),
            "-CAkey", str(self.pair.key), "-set_serial", str(secrets.randbits(62)),
            "-out", str(cert), "-days", DAYS, "-extfile", str(ext),
        )  # fmt: skip
        csr.unlink()
        ext.unlink()
        return KeyPair(cert, key)
