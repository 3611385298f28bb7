"""A test certificate authority: server and client certificates for TLS tests on 127.0.0.1."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass(frozen=True)
class Issued:
    certificate: str  # PEM
    key: str  # PEM, unencrypted
    subject: str  # RFC 4514


class CertificateAuthority:
    def __init__(self, name: str = "tokenkeeper test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, folder: Path) -> Path:
        path = folder / "ca.pem"
        path.write_text(self.pem)
        return path

    def issue(
        self,
        common_name: str,
        *,
        client: bool,
        valid_for: datetime.timedelta = datetime.timedelta(hours=1),
        starts_in: datetime.timedelta = datetime.timedelta(minutes=-5),
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tokenkeeper tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + starts_in)
            .not_valid_after(now + starts_in + valid_for)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if not client:
            names: list[x509.GeneralName] = [x509.DNSName(common_name)]
            with contextlib.suppress(ValueError):
                names = [x509.IPAddress(ipaddress.ip_address(common_name))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        return Issued(
            certificate.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key), subject.rfc4514_string()
        )
