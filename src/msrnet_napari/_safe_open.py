"""Opening a file for reading without blocking on, or reading from, anything that is
not a regular file (FIFO, device, socket, directory), and naming a dangling symlink
as such. Shared by the checkpoint loader and the image reader, which differ only in
the error they raise."""

from __future__ import annotations

import errno
import io
import os
import stat
from typing import Callable, Optional


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a directory', ... for a stat mode (for "not a regular
    file" errors)."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def dangling_symlink_error(path: str | os.PathLike[str]) -> Optional[FileNotFoundError]:
    """A FileNotFoundError that says so if ``path`` is a symlink to nothing, else None."""
    try:
        if not os.path.islink(path) or os.path.exists(path):
            return None
        target = os.readlink(path)
    except (OSError, ValueError):
        return None
    return FileNotFoundError(errno.ENOENT, f"dangling symlink (it points to {target!r}, "
                                           f"which does not exist)", os.fspath(path))


def open_regular(path: str | os.PathLike[str], not_regular: Callable[[str], Exception], *,
                 plain_missing: bool = False) -> io.BufferedReader:
    """Open ``path`` for reading, refusing anything but a regular file *before* reading
    a byte: O_NONBLOCK so that opening a FIFO without a writer cannot block, then fstat.

    ``not_regular(kind)`` builds the error for a path that is ``kind`` ("a directory",
    "a FIFO (named pipe)", ...). A missing file raises FileNotFoundError: a dangling
    symlink's says so; otherwise the system's, or with ``plain_missing`` a short
    "no such file" one.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        dangling = dangling_symlink_error(path)
        if dangling is not None:
            raise dangling from None
        if plain_missing:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from None
        raise
    except (IsADirectoryError, PermissionError):  # Windows cannot open a directory
        if os.path.isdir(path):
            raise not_regular("a directory") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(file_kind(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
