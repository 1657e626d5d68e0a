"""Files that hold secrets or buyers' data (the database, keystores, their password, the account key)
are created owner-only: 0600 in a 0700 directory.

They are created with the restrictive mode from the start (``os.open(..., 0o600)``, ``mkdir(0o700)``)
rather than chmod-ed afterwards, so there is no moment at which another local user can open them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "restrict", "write_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) 0700; an existing one is narrowed to 0700.

    Only call this on directories Cardless owns (``var/``, the keystore directory): an operator's own
    directory for a database URL is left as it is.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, 0600 from its first byte (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def restrict(path: Path) -> None:
    """Narrow an existing file to 0600 (files a library created, e.g. SQLite's)."""
    if path.exists():
        os.chmod(path, FILE_MODE)
