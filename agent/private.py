"""Private paths of the agent: its data dir, outbox and file cache are its user's only (directories 0700,
files 0600): task output, results and cached files live there. A path left loose is tightened, with a log
line.

(The cloud has the same rules in files/private.py; the agent does not import the cloud's file store.)
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("tiangong.agent")

DIR_MODE = 0o700
FILE_MODE = 0o600
_LOOSE = 0o077
"""Any permission for the group or others."""


def private_dir(path: Path, *, deep: bool = False) -> None:
    """Create `path` 0700 (with any missing directories above it), or tighten an existing one; `deep`:
    when it was loose, also what is under it (a tree this agent owns whole, such as its file cache)."""
    missing = []
    above = path
    while not above.exists() and above != above.parent:
        missing.append(above)
        above = above.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    if missing or not path.stat().st_mode & _LOOSE:
        return
    count = int(_tighten(path.resolve(), DIR_MODE))  # resolved: a data dir may be a symlink
    if deep:
        for parent, dirs, files in os.walk(path):
            count += sum(_tighten(Path(parent, name), DIR_MODE) for name in dirs)
            count += sum(_tighten(Path(parent, name), FILE_MODE) for name in files)
    if count:
        log.warning("tightened %s (%d paths) that the group or others could read: now 0700, files 0600", path, count)


def _tighten(path: Path, mode: int) -> bool:
    """chmod `path` when it grants the group or others anything (symlinks left alone); whether it did."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & _LOOSE:
        return False
    try:
        path.chmod(mode)
    except OSError as exc:  # not ours: say so, keep serving
        log.warning("cannot make %s private (mode %o): %s", path, stat.S_IMODE(st.st_mode), exc.strerror or exc)
        return False
    return True
