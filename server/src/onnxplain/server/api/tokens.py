"""Bearer tokens and their roles, from a tokens file and the environment.

Only SHA-256 digests of the tokens are kept, every lookup compares against all of them in constant time, and no
message or log line ever quotes a token (parse errors name the line, never its text). The tokens file is re-read when
it changes on disk, so tokens can be added or revoked without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from onnxplain.server.api.file_stamps import FileStamp, file_stamp
from onnxplain.server.settings import ConfigurationError

Role = Literal["caller", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
ENVIRONMENT_VARIABLES: dict[Role, str] = {"caller": "ONNXPLAIN_CALLER_TOKENS", "admin": "ONNXPLAIN_ADMIN_TOKENS"}
# Short tokens can be guessed; refusing them at start catches `ONNXPLAIN_ADMIN_TOKENS=admin`.
MIN_TOKEN_LENGTH = 16

log = logging.getLogger("onnxplain.server.auth")

Grant = tuple[bytes, Role]


class TokenStore:
    """Which role a presented token grants. Used from the event loop only (the auth interceptor), hence no lock."""

    def __init__(self, tokens_file: Path | None, environ: Mapping[str, str]) -> None:
        self._file = tokens_file
        self._environment_grants = [_grant(role, token) for role, token in environment_tokens(environ)]
        self._file_grants: list[Grant] = []
        self._stamp: FileStamp = None
        if tokens_file is not None:
            self._stamp = file_stamp(tokens_file)
            self._file_grants = _read_grants(tokens_file)
            if not self._file_grants and not self._environment_grants:
                raise ConfigurationError(f"tokens file {tokens_file} holds no token, so nobody could call the server")

    @property
    def enabled(self) -> bool:
        """Auth is on when any token is configured; with none the server is open as before."""
        return self._file is not None or bool(self._environment_grants)

    def role_of(self, token: str | None) -> Role | None:
        """The strongest role the token grants, or None. Compares with every token, without stopping at a match."""
        self._refresh()
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        granted = [
            role for stored, role in self._file_grants + self._environment_grants if hmac.compare_digest(stored, digest)
        ]
        return "admin" if "admin" in granted else "caller" if granted else None

    def _refresh(self) -> None:
        """Re-read the tokens file when its inode, size or modification time changed; a bad new file keeps the old
        tokens (a half-written file must not lock everybody out) and says why in the log."""
        if self._file is None:
            return
        stamp = file_stamp(self._file)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._file_grants = _read_grants(self._file)
        except ConfigurationError as error:
            log.warning("keeping the previous tokens: %s", error)
            return
        log.info("tokens file %s reloaded: %s", self._file, _count_roles(self._file_grants))


def parse_tokens(text: str, source: str) -> list[tuple[Role, str]]:
    """Lines `<role> <token>` with role `caller` or `admin`; blank lines and lines starting with # are skipped."""
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{source} line {number}"
        if len(fields) != 2:
            raise ConfigurationError(f"{where}: expected '<role> <token>'")
        role, token = fields
        if role not in ROLES:
            raise ConfigurationError(f"{where}: the role must be one of {', '.join(ROLES)} (role first, then token)")
        _check_token(token, where)
        tokens.append((role, token))
    return tokens


def environment_tokens(environ: Mapping[str, str]) -> list[tuple[Role, str]]:
    """Comma-separated tokens in ONNXPLAIN_CALLER_TOKENS and ONNXPLAIN_ADMIN_TOKENS."""
    tokens = []
    for role, variable in ENVIRONMENT_VARIABLES.items():
        for position, token in enumerate(environ.get(variable, "").split(","), start=1):
            if token.strip():
                _check_token(token.strip(), f"{variable} entry {position}")
                tokens.append((role, token.strip()))
    return tokens


def _check_token(token: str, where: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH or not all("!" <= character <= "~" and character != "," for character in token):
        raise ConfigurationError(
            f"{where}: a token must be at least {MIN_TOKEN_LENGTH} visible ASCII characters, without spaces or commas"
        )


def _read_grants(path: Path) -> list[Grant]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot read the tokens file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"the tokens file {path} is not UTF-8 text") from None
    return [_grant(role, token) for role, token in parse_tokens(text, str(path))]


def _grant(role: Role, token: str) -> Grant:
    return hashlib.sha256(token.encode()).digest(), role


def _count_roles(grants: list[Grant]) -> str:
    return ", ".join(f"{sum(role == name for _, role in grants)} {name}" for name in ROLES)
