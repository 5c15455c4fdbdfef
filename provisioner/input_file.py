"""Reading a file a user names (manifest, base, role, inventory, lock, mirrors, facts) without trusting it.

The file's type is checked before it is opened and again on the open descriptor, so a FIFO, a device
such as /dev/zero, a directory or a socket is refused at once instead of blocking or reading forever;
at most MAX_INPUT_BYTES + 1 bytes are read, and invalid UTF-8 is reported with its line and column.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from provisioner.errors import Issue, ProvisionError

#: Far above any real manifest, lock or inventory (the largest shipped file is a few KiB).
MAX_INPUT_BYTES = 4 * 1024 * 1024


class InputFileError(ProvisionError):
    """An input file cannot be used as one; `issue` says where and why."""

    def __init__(self, issue: Issue) -> None:
        self.issue = issue
        super().__init__(str(issue))


def _refuse(path: Path | str, message: str, line: int | None = None, column: int | None = None) -> InputFileError:
    return InputFileError(Issue(str(path), line, column, "", message))


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode cannot be read as an input file, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file; name the YAML/JSON file inside it"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file; save the content to a regular file and pass that"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file; pass a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file; pass a regular file"
    return "is not a regular file; pass a regular file"


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)  # follows links: a link to a regular file is fine
    except FileNotFoundError:
        if os.path.islink(path):
            raise _refuse(path, f"is a symbolic link to {os.readlink(path)!r}, which does not exist") from None
        raise _refuse(path, "file not found") from None
    except ValueError:
        raise _refuse(path, "the file name contains a NUL character") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "is a symbolic link loop (links that point at each other); "
                          "point the link at a regular file") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise _refuse(path, "the file name is too long for this system") from None
        raise _refuse(path, f"cannot read file: {exc.strerror or exc}") from None


def read_input_bytes(path: Path | str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is an InputFileError."""
    path = Path(path)
    reason = _not_regular(_stat(path).st_mode)
    if reason:
        raise _refuse(path, reason)
    try:
        # O_NONBLOCK: should the file have been swapped for a FIFO since the stat, opening it cannot block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(path, f"cannot read file: {exc.strerror or exc}") from None
    try:
        reason = _not_regular(os.fstat(fd).st_mode)
        if reason:
            raise _refuse(path, reason)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _refuse(path, f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if size > limit:
        line = data.count(b"\n", 0, limit) + 1
        raise _refuse(path, f"the file is larger than {limit // (1024 * 1024)} MiB, the limit for an input file "
                      f"(reached on this line); is this the right file?", line)
    return data


def read_input_text(path: Path | str, limit: int = MAX_INPUT_BYTES) -> str:
    """The file decoded as UTF-8; an undecodable byte is reported with its line and column."""
    data = read_input_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start:exc.start].decode("utf-8", errors="replace")) + 1
        bad = data[exc.start:exc.end].hex(" ")
        raise _refuse(path, f"invalid UTF-8 (bytes {bad}: {exc.reason}); save the file as UTF-8",
                      line, column) from None
