"""Certificates for the local control plane: a CA, serving cert, admin and front-proxy clients, SA signer.

Keys are ECDSA P-256 (fast to generate, accepted by every component, ES256 service-account tokens).
The serving certificate is shared by kube-apiserver, kube-controller-manager, kube-scheduler and kwok:
they all listen on 127.0.0.1 only, so one set of loopback SANs covers them.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_IP = "10.96.0.1"  # first address of the service range passed to kube-apiserver
SERVING_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS = ("127.0.0.1", "::1", SERVICE_IP)
ADMIN_USER = "tritonops-dev-admin"
ADMIN_GROUP = "system:masters"
PROXY_CLIENT = "front-proxy-client"  # the aggregation layer's identity towards extension API servers
VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files in a PKI directory (see :func:`make_pki`)."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "serving.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "serving.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def proxy_client_cert(self) -> Path:
        return self.dir / "front-proxy-client.crt"

    @property
    def proxy_client_key(self) -> Path:
        return self.dir / "front-proxy-client.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def complete(self) -> bool:
        """Whether every file exists (a previous :func:`make_pki` finished)."""
        files = (self.ca_cert, self.ca_key, self.serving_cert, self.serving_key, self.admin_cert,
                 self.admin_key, self.proxy_client_cert, self.proxy_client_key, self.sa_key, self.sa_pub)
        return all(p.is_file() for p in files)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs)


def _key_usage(is_ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not is_ca,
                         data_encipherment=False, key_agreement=False, key_cert_sign=is_ca, crl_sign=is_ca,
                         encipher_only=False, decipher_only=False)


def issue(subject: x509.Name, key: ec.EllipticCurvePrivateKey, *, issuer: x509.Name | None = None,
          issuer_key: ec.EllipticCurvePrivateKey | None = None, is_ca: bool = False,
          usages: Sequence[x509.ObjectIdentifier] = (), dns: Sequence[str] = (),
          ips: Sequence[str] = ()) -> x509.Certificate:
    """Sign a certificate for ``key`` (self-signed when no issuer is given)."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer or subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + VALIDITY)
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
               .add_extension(_key_usage(is_ca), critical=True))
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """Write a fresh CA, serving cert, admin and front-proxy client certs and the SA key pair to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    ca_key = _new_key()
    ca_name = _name("tritonops-dev-ca", ["tritonops"])
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, issue(ca_name, ca_key, is_ca=True))

    serving_key = _new_key()
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, issue(
        _name("kube-apiserver"), serving_key, issuer=ca_name, issuer_key=ca_key,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH], dns=SERVING_DNS, ips=SERVING_IPS))

    admin_key = _new_key()
    _write_key(pki.admin_key, admin_key)
    _write_cert(pki.admin_cert, issue(
        _name(ADMIN_USER, [ADMIN_GROUP]), admin_key, issuer=ca_name, issuer_key=ca_key,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH]))

    proxy_key = _new_key()
    _write_key(pki.proxy_client_key, proxy_key)
    _write_cert(pki.proxy_client_cert, issue(
        _name(PROXY_CLIENT), proxy_key, issuer=ca_name, issuer_key=ca_key,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH]))

    sa_key = _new_key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def issue_client(pki: Pki, directory: Path, stem: str, cn: str, orgs: Sequence[str] = ()) -> tuple[Path, Path]:
    """Sign a client certificate ``<directory>/<stem>.crt`` (and its key) with ``pki``'s CA.

    For the identities of node components: ``system:node:<name>`` in ``system:nodes`` (the Node
    authorizer) and ``system:kube-proxy`` (bound to ``system:node-proxier`` by the default RBAC).
    """
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca_name = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()).subject
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_key} is not an EC key")
    directory.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    cert, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    _write_key(key_path, key)
    _write_cert(cert, issue(_name(cn, orgs), key, issuer=ca_name, issuer_key=ca_key,
                            usages=[ExtendedKeyUsageOID.CLIENT_AUTH]))
    return cert, key_path
