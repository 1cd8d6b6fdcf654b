"""TLS and mutual TLS for the gRPC port, from PEM files that are re-read when they change.

gRPC asks for the certificate configuration at every new handshake; the files are read again only when one of them
changed on disk (inode, size or modification time), so a rotated certificate (cert-manager, a Kubernetes secret, a
cron job) serves the next connection without a restart while open connections keep the one they started with.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import grpc

from onnxplain.server.api.file_stamps import FileStamp, file_stamp
from onnxplain.server.settings import ConfigurationError, ServerSettings

log = logging.getLogger("onnxplain.server.tls")


def add_port(server: grpc.aio.Server, settings: ServerSettings) -> int:
    """Listen on the settings' address: with TLS when a certificate is configured, in plain text otherwise."""
    address = f"{settings.host}:{settings.port}"
    if settings.tls_certificate is None or settings.tls_private_key is None:
        return server.add_insecure_port(address)
    files = CertificateFiles(settings.tls_certificate, settings.tls_private_key, settings.tls_client_ca)
    credentials = grpc.dynamic_ssl_server_credentials(
        files.initial, files.changed, require_client_authentication=settings.tls_client_ca is not None
    )
    log.info("TLS on%s", ", client certificates required" if settings.tls_client_ca else "")
    return server.add_secure_port(address, credentials)


class CertificateFiles:
    """The server's certificate chain and key, and for mutual TLS the CA certificates clients must be signed by."""

    def __init__(self, certificate_chain: Path, private_key: Path, client_ca: Path | None) -> None:
        self._chain = certificate_chain
        self._key = private_key
        self._client_ca = client_ca
        # gRPC may call `changed` from several handshakes at once.
        self._lock = threading.Lock()
        self._stamps = self._stamp()
        self.initial = self._read()

    def changed(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetch callback: a new configuration after a change on disk, else None to keep the current one.

        A file set that does not work (half written, key and certificate not yet both replaced) is logged and
        skipped; gRPC keeps serving the previous certificates and the next change is picked up as usual."""
        with self._lock:
            stamps = self._stamp()
            if stamps == self._stamps:
                return None
            self._stamps = stamps
            try:
                configuration = self._read()
            except ConfigurationError as error:
                log.warning("keeping the previous TLS certificates: %s", error)
                return None
            log.info("TLS certificates reloaded from %s", self._chain)
            return configuration

    def _read(self) -> grpc.ServerCertificateConfiguration:
        _check_with_openssl(self._chain, self._key, self._client_ca)
        chain, key = _read_bytes(self._chain), _read_bytes(self._key)
        roots = None if self._client_ca is None else _read_bytes(self._client_ca)
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def _stamp(self) -> tuple[FileStamp, ...]:
        return tuple(file_stamp(path) for path in (self._chain, self._key, self._client_ca) if path is not None)


def _check_with_openssl(chain: Path, key: Path, client_ca: Path | None) -> None:
    """gRPC reports a bad file only at each failing handshake; Python's ssl says at once what is wrong (not PEM,
    key and certificate not a pair, an encrypted key, which gRPC cannot use)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(chain, key, password=_refuse_password)
    except OSError as error:  # ssl.SSLError is an OSError
        raise ConfigurationError(f"TLS certificate {chain} with key {key}: {error}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except OSError as error:
            raise ConfigurationError(f"TLS client CA {client_ca}: {error}") from None


def _refuse_password() -> bytes:
    raise ConfigurationError("the TLS private key is encrypted; gRPC needs an unencrypted key")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}") from None
