"""Input paths that must be regular files: refuse FIFOs, devices and sockets before opening them.

Opening a named pipe blocks until a writer appears (for ever, in a batch job), and a device such
as ``/dev/zero`` or ``/dev/urandom`` never ends; neither is a pool, a labels file or a score
table. ``os.stat`` tells what a path is without opening it (and follows symbolic links, so a link
named ``data.jsonl`` that points at ``/dev/zero`` is caught too). Only local paths are checked:
an object in a bucket is always a plain object.
"""

from __future__ import annotations

import os
import stat

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class SpecialFileError(ValueError):
    """A local input that is not a regular file (or a directory)."""


def local_path(url: str) -> str | None:
    """The local path ``url`` names, or None for a remote URL (``s3://``, ``memory://`` ...)."""
    path = str(url)
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def special_kind(url: str) -> str | None:
    """What ``url`` is when it is a local FIFO, device or socket ("a FIFO (named pipe)" ...);
    None for a regular file, a directory, a missing path or a remote URL."""
    path = local_path(url)
    if path is None:
        return None
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, unreadable, a NUL in the name: the caller's open says so
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None)


def refuse_special_file(url: str, what: str) -> None:
    """Raise :class:`SpecialFileError` when ``url`` is a local FIFO, device or socket.

    ``what`` names the input in the sentence (``pool input``, ``labels file``, ``score table``)."""
    kind = special_kind(url)
    if kind is not None:
        raise SpecialFileError(
            f"{what} {url} is {kind}, not a regular file; it was not opened (reading it could wait for ever or "
            "never end): save the data to a file and pass that file"
        )
