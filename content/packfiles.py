"""Reading a pack's files so that a pack reads only itself, within bounds.

Every file of a pack — the manifest, layouts, their text parts and CSS, the
blocks folder and everything under it, block HTML and text parts — is read
through one :class:`PackFiles`:

- a name from the manifest is a relative POSIX path; an absolute path or one
  that climbs out (``../x``) is refused before anything is opened;
- the path is opened component by component from the pack root with
  ``O_NOFOLLOW`` (``openat``), so what is checked is what is read: a symbolic
  link anywhere below the root (the file or any folder on the way) is refused;
- only a regular file with one link is read: a hard link (``st_nlink`` > 1)
  could be any file of the server, and a FIFO or device could hang or have
  side effects (they are never opened; ``O_NONBLOCK`` covers a swap in between);
- at most :data:`MAX_FILE_BYTES` per file, decoded as UTF-8 without NUL.

The pack root itself is the operator's choice (the path given to
``patron content import``) and may be reached through a link. YAML is parsed
with :func:`segments.plain_data.load_yaml`, bounded in depth and in values
after alias expansion (a "billion laughs" document is refused before it is built).

POSIX only: it needs ``dir_fd`` support for ``os.open`` and ``os.stat``.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

MAX_FILE_BYTES = 1024 * 1024  # 1 MiB: twice the 512 KB an email may render to
MAX_FOLDER_DEPTH = 16  # folders below the blocks folder

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_LINKS_REFUSED = "a pack may not contain links, which could reach any file of the server"
MISSING = "does not exist in the pack"
_TOO_LARGE = f"is larger than {MAX_FILE_BYTES // 1024} KiB, the limit for one file of a pack"


class PackFileError(Exception):
    """One file or folder of a pack that may not be read: ``path`` within the pack, and why."""

    def __init__(self, path: str, message: str, line: int | None = None):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.line = line


def pack_path(name: Any) -> str:
    """A manifest's path as a normalised relative POSIX path; PackFileError if it is absolute or leaves the pack."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise PackFileError(str(name), "is not a path to a file of the pack")
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise PackFileError(name, "is an absolute path: paths in a pack are relative to the pack")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        raise PackFileError(name, "points outside the pack")
    return normal


class PackFiles:
    """The files of the pack at ``root``, read only through checks that keep the pack inside itself."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))

    def close(self) -> None:
        os.close(self._root_fd)

    def __enter__(self) -> PackFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_text(self, name: str) -> str:
        """The UTF-8 text of the file ``name`` (relative to the pack), or PackFileError naming it and why."""
        name = pack_path(name)
        *folders, leaf = PurePosixPath(name).parts or (".",)
        folder_fd = self._open_folder(folders)
        try:
            before = self._lstat(name, leaf, folder_fd)
            _check_file(name, before)
            try:
                fd = os.open(leaf, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=folder_fd)
            except OSError as exc:
                raise PackFileError(name, f"cannot be read: {exc.strerror}") from None
            try:
                after = os.fstat(fd)
                if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
                    raise PackFileError(name, "changed while it was being read")
                _check_file(name, after)
                data = _read_bounded(fd, name)
            finally:
                os.close(fd)
        finally:
            os.close(folder_fd)
        return decode(name, data)

    def is_folder(self, name: str) -> bool:
        """Whether ``name`` is a folder of the pack (reached without links); PackFileError for a link on the way."""
        name = pack_path(name)
        try:
            os.close(self._open_folder(PurePosixPath(name).parts))
        except PackFileError as exc:
            if exc.message == MISSING:
                return False
            raise
        return True

    def walk(self, name: str) -> Iterator[str | PackFileError]:
        """Every entry that is not a folder under the folder ``name``, at any depth, as its path within the pack.

        A link (to a file or a folder) or a folder nested too deep is yielded as a PackFileError instead, and
        nothing is read through it. Entries come folder by folder, in name order.
        """
        pending = [pack_path(name)]
        while pending:
            folder = pending.pop()
            parts = PurePosixPath(folder).parts
            if len(parts) - len(PurePosixPath(name).parts) > MAX_FOLDER_DEPTH:
                yield PackFileError(folder, f"is nested more than {MAX_FOLDER_DEPTH} folders deep; not read")
                continue
            fd = self._open_folder(parts)
            try:
                with os.scandir(fd) as listing:
                    entries = sorted((e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in listing)
            finally:
                os.close(fd)
            subfolders = []
            for entry, is_link, is_dir in entries:
                path = posixpath.join(folder, entry) if folder != "." else entry
                if is_link:
                    yield PackFileError(path, f"is a symbolic link: {_LINKS_REFUSED}")
                elif is_dir:
                    subfolders.append(path)
                else:
                    yield path
            pending.extend(reversed(subfolders))

    def _open_folder(self, parts) -> int:
        """A descriptor of the folder ``parts`` below the root, opened without following any link."""
        fd = os.dup(self._root_fd)
        done: list[str] = []
        try:
            for part in parts:
                if part == ".":
                    continue
                done.append(part)
                where = "/".join(done)
                info = self._lstat(where, part, fd)
                if stat.S_ISLNK(info.st_mode):
                    raise PackFileError(where, f"is a symbolic link: {_LINKS_REFUSED}")
                if not stat.S_ISDIR(info.st_mode):
                    raise PackFileError(where, "is not a folder")
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    raise PackFileError(where, f"cannot be opened: {exc.strerror}") from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _lstat(name: str, leaf: str, folder_fd: int) -> os.stat_result:
        try:
            return os.stat(leaf, dir_fd=folder_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise PackFileError(name, MISSING) from None
        except OSError as exc:
            raise PackFileError(name, f"cannot be read: {exc.strerror}") from None


def _check_file(name: str, info: os.stat_result) -> None:
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        raise PackFileError(name, f"is a symbolic link: {_LINKS_REFUSED}")
    if stat.S_ISDIR(mode):
        raise PackFileError(name, "is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise PackFileError(name, "is not a regular file (a FIFO, socket or device); a pack holds only plain files")
    if info.st_nlink > 1:
        raise PackFileError(name, f"has {info.st_nlink} hard links: {_LINKS_REFUSED}")
    if info.st_size > MAX_FILE_BYTES:
        raise PackFileError(name, _TOO_LARGE)


def _read_bounded(fd: int, name: str) -> bytes:
    chunks, size = [], 0
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise PackFileError(name, _TOO_LARGE)
    return b"".join(chunks)


def decode(name: str, data: bytes) -> str:
    """``data`` as UTF-8 text (a byte-order mark dropped); PackFileError for other bytes or a NUL character."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PackFileError(name, f"is not UTF-8 text (byte {exc.start})") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise PackFileError(name, "holds a NUL character, which is not text", line)
    return text
