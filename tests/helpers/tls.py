"""A certificate authority made inside the tests (trustme), with a server certificate for the
loopback addresses and a client certificate for mutual TLS, as contexts and as PEM files."""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs
import trustme

from vlens_async.emulator import server_tls_context


@attrs.frozen
class PemFiles:
    """The test PKI written out: the CA, the server's chain and key, the client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path  # key and chain in one file


@attrs.frozen
class TestPKI:
    """A fresh CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""

    __test__ = False  # not a test class, whatever pytest's name pattern says

    ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert

    @classmethod
    def make(cls) -> TestPKI:
        """A new CA and its two leaf certificates."""
        ca = trustme.CA()
        return cls(
            ca=ca,
            server=ca.issue_cert("127.0.0.1", "localhost"),
            client=ca.issue_cert("vlens-test-client.example"),
        )

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        """A verifying client context that trusts this CA only; ``with_cert`` presents the client
        certificate (mutual TLS)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_cert:
            self.client.configure_cert(context)
        return context

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        """The emulator's context, built by the emulator's own helper from this PKI's files."""
        with (
            self.ca.cert_pem.tempfile() as ca_file,
            self.server.private_key_pem.tempfile() as key,
            self.server.cert_chain_pems[0].tempfile() as cert,
        ):
            return server_tls_context(cert, key, client_ca=ca_file if require_client_cert else None)

    def write(self, folder: Path) -> PemFiles:
        """Write every PEM file into ``folder``."""
        files = PemFiles(
            ca=folder / "ca.pem",
            server_cert=folder / "server.pem",
            server_key=folder / "server.key",
            client_cert=folder / "client.pem",
            client_key=folder / "client.key",
            client_combined=folder / "client-combined.pem",
        )
        self.ca.cert_pem.write_to_path(str(files.ca))
        self.server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        self.server.private_key_pem.write_to_path(str(files.server_key))
        self.client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        self.client.private_key_pem.write_to_path(str(files.client_key))
        self.client.private_key_and_cert_chain_pem.write_to_path(str(files.client_combined))
        return files
