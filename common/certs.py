"""Credentials for a deployment: a CA, the coordinator's TLS certificate, and one key pair per site.

TLS: the SuperLink presents ``server.pem`` (signed by ``ca.crt``, valid for the given host names and IPs); sites
trust ``ca.crt``. SuperNode authentication: each site signs its requests with its EC private key (OpenSSH
format, NIST P-384, what Flower accepts) and the coordinator registers the site's public key; an unregistered
key is refused. Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

VALID_DAYS = 365


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meddiff federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def create_credentials(out: str | Path, hosts: list[str], sites: list[str]) -> dict[str, Path]:
    """Write ca.crt/ca.key, server.pem/server.key and sites/<name>[.pub]; returns their paths by role."""
    out = Path(out)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca_cert = (x509.CertificateBuilder().subject_name(_name("meddiff CA")).issuer_name(_name("meddiff CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    server_cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
                   .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                   .add_extension(_san(hosts), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {
        "ca": _write(out / "ca.crt", ca_cert.public_bytes(pem)),
        "ca_key": _write(out / "ca.key", ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()), private=True),
        "server_cert": _write(out / "server.pem", server_cert.public_bytes(pem)),
        "server_key": _write(out / "server.key", server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), private=True),
    }
    for site in sites:
        paths.update(create_site_keys(out / "sites", site))
    return paths


def create_site_keys(folder: str | Path, site: str) -> dict[str, Path]:
    """A site's SuperNode authentication key pair: ``<site>`` (private, OpenSSH) and ``<site>.pub``."""
    folder = Path(folder)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {f"{site}_key": _write(folder / site, private, private=True),
            f"{site}_pub": _write(folder / f"{site}.pub", public + f" {site}\n".encode())}
