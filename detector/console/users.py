"""Analysts' logins: a file of `name:scrypt$n$r$p$salt$hash` lines (stdlib hashlib.scrypt).

add_user(Path("data/console-users"), "ana", "s3cret")     # `detector console --add-user ana`
check(Path("data/console-users"), "ana", "s3cret")        # True / False, constant time
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

# scrypt cost: n=2**14, r=8, p=1 (~16 MB and ~50 ms per check here): OWASP's minimum for scrypt.
N, R, P = 1 << 14, 8, 1


def _hash(password: str, salt: bytes, n: int = N, r: int = R, p: int = P) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 << 20, dklen=32)


def encode(password: str) -> str:
    salt = os.urandom(16)
    b64 = base64.b64encode
    return f"scrypt${N}${R}${P}${b64(salt).decode()}${b64(_hash(password, salt)).decode()}"


def add_user(path: Path, name: str, password: str) -> None:
    if not name or ":" in name or "\n" in name:
        raise ValueError("a user name is one line without ':'")
    lines = [x for x in (path.read_text().splitlines() if path.exists() else []) if not x.startswith(f"{name}:")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*lines, f"{name}:{encode(password)}"]) + "\n")
    path.chmod(0o600)


def check(path: Path, name: str, password: str) -> bool:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        user, _, stored = line.partition(":")
        if user != name:
            continue
        try:
            _, n, r, p, salt, want = stored.split("$")
            got = _hash(password, base64.b64decode(salt), int(n), int(r), int(p))
        except ValueError:
            return False
        return hmac.compare_digest(got, base64.b64decode(want))
    _hash(password, b"0" * 16)  # as slow for an unknown name: no timing tells which names exist
    return False
