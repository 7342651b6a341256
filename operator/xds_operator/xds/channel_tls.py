"""The ADS server's own certificate files (`--xds-tls-cert`, `--xds-tls-key`, `--xds-client-ca`):
checked with the same rules as Secrets (ir/certificates.py), and re-read when they change.

grpc asks for the server's certificate at every new handshake (server.py passes `changed` as its
certificate configuration fetcher), so a rotated file is picked up by the next connection while
the streams already open keep theirs. A file that is bad at start is a UsageError-like
TlsFilesError; one that turns bad later is logged and the last good files keep serving.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..ir.certificates import CA_KEY, CERT_KEY, PRIVATE_KEY, InvalidSecret, ca_bundle, key_pair, now_utc

log = logging.getLogger(__name__)


class TlsFilesError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the option and file."""


@dataclass(frozen=True)
class XdsTlsFiles:
    """The ADS server's TLS: its certificate chain and key, and the CA of client certificates
    (given: every proxy must present a certificate it signed, naming its group; see peer_group.py)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def requires_client_certificates(self) -> bool:
        return self.client_ca is not None

    def options(self) -> dict[str, Path]:
        named = {"--xds-tls-cert": self.cert, "--xds-tls-key": self.key}
        if self.client_ca is not None:
            named["--xds-client-ca"] = self.client_ca
        return named


@dataclass(frozen=True)
class TlsMaterial:
    """What grpc is given: PEM bytes, checked."""

    chain: bytes
    key: bytes
    client_ca: bytes | None


Stamp = tuple[tuple[int, int, int], ...]  # (inode, size, mtime_ns) per file, following symlinks


def load(files: XdsTlsFiles) -> TlsMaterial:
    """The files' contents, checked: they exist, parse, the key is the certificate's, the chain is in
    order, nothing has expired. Raises TlsFilesError saying which option's file is wrong and why."""
    contents = {}
    for option, path in files.options().items():
        try:
            contents[option] = path.read_bytes()
        except OSError as exc:
            raise TlsFilesError(f"{option} {path}: {exc.strerror or exc}") from None
    # The checks' messages name a Secret's keys; here they are the options' files.
    names = {CERT_KEY: f"--xds-tls-cert {files.cert}", PRIVATE_KEY: f"--xds-tls-key {files.key}",
             CA_KEY: f"--xds-client-ca {files.client_ca}"}
    now = now_utc()
    try:
        pair = key_pair(contents["--xds-tls-cert"], contents["--xds-tls-key"], now)
        ca = ca_bundle(contents["--xds-client-ca"], now).pem if files.client_ca is not None else None
    except InvalidSecret as exc:
        message = str(exc)
        for secret_key, option in names.items():
            message = message.replace(secret_key, option)
        raise TlsFilesError(message) from None
    return TlsMaterial(pair.chain, pair.key, ca)


def stamp(files: XdsTlsFiles) -> Stamp | None:
    """What changes when any of the files is replaced or rewritten (None: one cannot be read).
    Kubernetes swaps a mounted Secret's symlink: stat follows it, so the inode changes."""
    try:
        stats = [os.stat(path) for path in files.options().values()]
    except OSError:
        return None
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


class ReloadingTls:
    """The newest good TlsMaterial of `files`, re-read only when their stamp changes. `changed` may be
    called from grpc's threads, several handshakes at once: one of them reads the files."""

    def __init__(self, files: XdsTlsFiles) -> None:
        self.files = files
        self._stamp = stamp(files)
        self.current = load(files)  # raises TlsFilesError: bad files at start stop the server
        self._refused: Stamp | None | object = _NONE  # the stamp of files found bad (None: unreadable)
        self._lock = threading.Lock()

    def changed(self) -> TlsMaterial | None:
        """New material if the files changed and are good; None if unchanged or bad (then the
        error is logged once per change of the files, and the last good material keeps serving)."""
        with self._lock:
            return self._reload()

    def _reload(self) -> TlsMaterial | None:
        now = stamp(self.files)
        if now == self._stamp or now == self._refused:
            return None
        try:
            material = load(self.files)
        except TlsFilesError as exc:
            self._refused = now
            log.error("xDS TLS files not reloaded, still serving the previous certificate: %s", exc)
            return None
        self._stamp, self._refused = now, _NONE
        if material == self.current:
            return None
        self.current = material
        log.info("xDS TLS files reloaded: %s", ", ".join(f"{o} {p}" for o, p in self.files.options().items()))
        return material


_NONE = object()  # no stamp refused yet
