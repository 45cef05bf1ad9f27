"""Private paths of the cloud: its data dir, database, tokens, keys and stored files are the owner's only
(directories 0700, files 0600). A path left loose by an older version is tightened, with a log line."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("tiangong.files")

DIR_MODE = 0o700
FILE_MODE = 0o600
_LOOSE = 0o077
"""Any permission for the group or others."""


def private_dir(path: Path) -> None:
    """Create `path` (mode 0700, and so are the missing directories above it), or tighten an existing
    one that others can read or enter."""
    missing = []
    above = path
    while not above.exists() and above != above.parent:
        missing.append(above)
        above = above.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    if not missing:
        _tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Tighten an existing file to 0600 when the group or others have any access to it; absent is fine."""
    _tighten(path, FILE_MODE)


def is_loose(path: Path) -> bool:
    """Whether `path` exists and grants the group or others any access."""
    try:
        return bool(path.stat().st_mode & _LOOSE)
    except FileNotFoundError:
        return False


def private_tree(root: Path) -> int:
    """Tighten `root` and everything under it (directories 0700, files 0600); returns how many were loose.

    Meant for trees this process owns whole (the file store), on start. Symlinks are left alone.
    """
    tightened = int(_tighten(root, DIR_MODE, quiet=True))
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            tightened += _tighten(Path(parent, name), DIR_MODE, quiet=True, follow=False)
        for name in files:
            tightened += _tighten(Path(parent, name), FILE_MODE, quiet=True, follow=False)
    if tightened:
        log.warning("tightened %d paths under %s that the group or others could read (now 0700/0600)", tightened, root)
    return tightened


def _tighten(path: Path, mode: int, *, quiet: bool = False, follow: bool = True) -> bool:
    """chmod `path` to `mode` if it grants the group or others anything; whether it did. A symlink is
    followed when asked (a data dir may be one), else left alone (one inside a tree points outside it)."""
    try:
        st = path.stat() if follow else path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & _LOOSE:
        return False
    try:
        path.chmod(mode)
    except OSError as exc:  # not ours (a volume owned by root, say): say so, keep serving
        log.warning("cannot make %s private (mode %o): %s", path, stat.S_IMODE(st.st_mode), exc.strerror or exc)
        return False
    if not quiet:
        log.warning("tightened %s from mode %o to %o: others could read it", path, stat.S_IMODE(st.st_mode), mode)
    return True
