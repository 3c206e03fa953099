"""Secret keys kept in files, and the safety identifier derived from the server's one.

**Secret files.** :func:`load_or_create_secret` keeps a key in a file of exactly ``size`` bytes
(:data:`SECRET_BYTES` for the gateway's HMAC key), created with mode 0600 on first use and
refused (``ConfigurationError``) when its permissions let anyone but the owner read it or its size
is wrong. Creation is atomic, so a process that reads the file while another creates it never
sees part of a key. The gateway's HMAC key and the web UI's cookie-signing key are both kept this
way.

**Safety identifier.** :func:`safety_identifier` is ``HMAC-SHA256(secret, encode(tenant, user))``
as 64 lowercase hex characters (OpenAI's ``safety_identifier`` takes at most 64), where
``encode`` length-prefixes each UTF-8 part with 8 big-endian bytes, so no two ``(tenant, user)``
pairs share an encoding: ``("ab", "c")`` and ``("a", "bc")`` differ. The provider can tell one
user from another (and act on that one user instead of the whole organisation) but cannot learn
who it is, nor link users across tenants or across seawall installations (each has its own
secret). Losing the secret file changes every safety identifier; leaking it lets anyone who
knows a user id compute its digest.

This module imports nothing of seawall's but its errors, so the gateway, the review routes,
the UI and the command line share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from seawall.errors import ConfigurationError

SECRET_BYTES = 32
"""Size of the server secret file, in bytes."""

MIN_SECRET_BYTES = 16
"""Shortest secret :func:`safety_identifier` accepts."""


# ----------------------------------------------------------------- safety identifier


def _length_prefixed(*parts: str) -> bytes:
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(8, "big")
        out += raw
    return bytes(out)


def safety_identifier(secret: bytes, tenant: str, user: str) -> str:
    """``HMAC-SHA256(secret, len(tenant) ‖ tenant ‖ len(user) ‖ user)`` as 64 lowercase hex characters.

    Lengths are 8-byte big-endian counts of the UTF-8 bytes that follow, so the encoding is
    unambiguous for any two strings.
    """
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"the safety identifier secret must be at least {MIN_SECRET_BYTES} bytes")
    if not isinstance(tenant, str) or not isinstance(user, str):
        raise TypeError("tenant and user must be strings")
    return hmac.new(secret, _length_prefixed(tenant, user), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------- secret files


def _check_secret_file(fd: int, path: Path, size: int) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f"secret file {path} is not a regular file")
    if os.name == "posix" and info.st_mode & 0o077:
        raise ConfigurationError(
            f"secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
            "it must be readable by its owner only (chmod 600)"
        )
    if info.st_size != size:
        raise ConfigurationError(
            f"secret file {path} holds {info.st_size} bytes; it must hold exactly {size}"
        )


def _read_secret(path: Path, size: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigurationError(f"cannot read secret file {path}: {exc}") from exc
    try:
        _check_secret_file(fd, path, size)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(size + 1)
    finally:
        os.close(fd)
    if len(data) != size:
        raise ConfigurationError(f"secret file {path} holds {len(data)} bytes; it must hold {size}")
    return data


def load_or_create_secret(path: str | Path, *, size: int = SECRET_BYTES) -> bytes:
    """The secret in ``path``, created (``size`` random bytes, mode 0600) if the file does not exist.

    ``~`` is expanded. Creation is atomic: the bytes go to a private temporary file that is then
    hard-linked into place, so a concurrent reader sees either no file or the whole secret, and
    two processes starting together end up with the same one. Missing parent directories are
    created with mode 0700.
    """
    path = Path(path).expanduser()
    if path.exists():
        return _read_secret(path, size)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(size))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except OSError as exc:
        raise ConfigurationError(f"cannot create secret file {path}: {exc}") from exc
    return _read_secret(path, size)


__all__ = ["MIN_SECRET_BYTES", "SECRET_BYTES", "load_or_create_secret", "safety_identifier"]
