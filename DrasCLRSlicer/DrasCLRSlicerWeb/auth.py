"""Sign-in for the reading room: users and password hashes from a JSON file, signed session cookies.

The users file (``--users FILE``) holds ``{"users": {"NAME": {"password": "scrypt$N$r$p$SALT$HASH"}}}``; write an
entry with ``drasclr web --users FILE --add-user NAME`` (the password is read from the terminal or stdin, only its
scrypt hash is stored). Hashing is ``hashlib.scrypt`` (standard library); cookies are ``NAME|EXPIRY|HMAC-SHA256``
with a secret kept in the data folder (``run/cookie-secret``, mode 600), so a restart keeps users signed in.

:func:`needs_sign_in` is the rule the server applies: any address other than loopback requires a users file.
No slicer/vtk/trame import.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from drasclr.core.errors import InputError

COOKIE = "drasclr_user"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SCRYPT = (2**14, 8, 1)  # N, r, p: about 16 MiB and 50 ms per check


def is_loopback(host: str) -> bool:
    """True for addresses that only this machine can reach (127.0.0.0/8, ::1, ``localhost``)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def needs_sign_in(host: str) -> bool:
    return not is_loopback(host)


def valid_user_name(name: str) -> bool:
    return bool(_NAME.match(name or ""))


def hash_password(password: str, salt: bytes | None = None) -> str:
    n, r, p = _SCRYPT
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return "$".join(["scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


@dataclass
class Users:
    """The users file: names and password hashes (re-read when the file changes, so adding a user needs no
    restart)."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path).expanduser().resolve()
        self._mtime = None
        self._users: dict[str, dict] = {}
        self.reload()

    def reload(self) -> None:
        if not self.path.is_file():
            raise InputError(f"--users {self.path}: no such file (create it with --add-user NAME)")
        mtime = self.path.stat().st_mtime_ns
        if mtime == self._mtime:
            return
        try:
            data = json.loads(self.path.read_text())
            users = data["users"]
            assert isinstance(users, dict)
        except (ValueError, KeyError, AssertionError) as exc:
            raise InputError(f"--users {self.path}: expected {{\"users\": {{NAME: {{\"password\": HASH}}}}}}") from exc
        self._users = {k: v for k, v in users.items() if valid_user_name(k) and isinstance(v, dict)}
        self._mtime = mtime

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, name: str) -> bool:
        try:
            self.reload()
        except InputError:
            return False
        return name in self._users

    def verify(self, name: str, password: str) -> bool:
        try:
            self.reload()
        except InputError:
            return False
        entry = self._users.get(name)
        if entry is None:
            check_password(password, hash_password("x"))  # same work for unknown names
            return False
        return check_password(password, str(entry.get("password", "")))


def add_user(path: Path, name: str, password: str) -> None:
    """Add or replace one user's password hash in the users file (written atomically, mode 600)."""
    if not valid_user_name(name):
        raise InputError(f"--add-user {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    if len(password) < 8:
        raise InputError("the password must have at least 8 characters")
    path = Path(path).expanduser()
    data = json.loads(path.read_text()) if path.is_file() else {"users": {}}
    data.setdefault("users", {})[name] = {"password": hash_password(password)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


class Cookies:
    """Signed sign-in cookies: ``NAME|EXPIRY|SIGNATURE``."""

    def __init__(self, secret_file: Path, max_age: float = 12 * 3600):
        self.max_age = max_age
        secret_file = Path(secret_file)
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        if not secret_file.is_file():
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        self._key = bytes.fromhex(secret_file.read_text().strip())

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def make(self, user: str) -> str:
        text = f"{user}|{int(time.time() + self.max_age)}"
        return f"{text}|{self._sign(text)}"

    def user(self, cookie: str | None) -> str | None:
        """The signed-in user of a cookie; None when absent, forged or expired."""
        try:
            user, expiry, signature = (cookie or "").split("|")
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._sign(f"{user}|{expiry}")):
            return None
        if not expiry.isdigit() or int(expiry) < time.time() or not valid_user_name(user):
            return None
        return user
