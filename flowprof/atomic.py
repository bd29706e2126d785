"""Atomic file writes: a reader sees the old file or the new one, never half of one; and
atomic folders (:func:`atomic_dir`): a command's outputs appear together or not at all.

Every file flowprof writes (exports, diagrams, IDX data, checkpoints, history, plots) goes through
:func:`atomic_path`: the content is written to a temporary name in the same folder and renamed over
the target with ``os.replace`` (atomic on POSIX and Windows when both are on one file system).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from flowprof.errors import OutputFolderError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary name keeps the suffix of ``path`` so that writers that infer a format from the
    suffix (matplotlib's ``savefig``) still do. On an exception (KeyboardInterrupt included) the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or exc.filename == str(tmp):  # name the file the user asked for
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


# --- whole folders ---------------------------------------------------------------------------

MANIFEST = ".flowprof-run.json"


def check_replaceable(path: str | Path) -> None:
    """Raise :class:`OutputFolderError` unless ``path`` is absent, an empty folder, or a folder of a
    run of flowprof's (its manifest lists every file in it): only those are replaced."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputFolderError(f"{path} is a file, not a folder")
    found = sorted(_files(path))
    if not found:
        return
    try:
        listed = set(json.loads((path / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    foreign = [f for f in found if f != MANIFEST and f not in listed]
    if foreign or MANIFEST not in found:
        names = ", ".join((foreign or found)[:3]) + (", ..." if len(foreign or found) > 3 else "")
        raise OutputFolderError(
            f"{path} holds files flowprof did not write ({names}), which replacing it would "
            "delete: give a new or empty folder, or remove them"
        )


def _files(folder: Path) -> Iterator[str]:
    """Every file under ``folder``, as a path relative to it with '/'."""
    for root, _, names in os.walk(folder):
        for name in names:
            yield Path(root, name).relative_to(folder).as_posix()


@contextlib.contextmanager
def atomic_dir(path: str | Path, run: dict | None = None) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success it becomes ``path`` whole, so a
    reader (and a run killed at any moment, and two runs into one folder) sees the old set of
    files or the new set, never a mix.

    How: the run writes into ``.NAME.flowprof-PID-XXXX`` beside ``path``. At the end a manifest,
    ``.flowprof-run.json`` (the run: ``run``, the time, the files), is written into it, and under
    an exclusive lock on the parent folder (``flock``: concurrent runs swap one at a time) it is
    exchanged with ``path`` in one step (Linux's ``renameat2(RENAME_EXCHANGE)``; elsewhere two
    renames, with a moment where ``path`` is absent) and the old set is removed. A folder is only
    replaced if :func:`check_replaceable` allows it (it holds nothing but a flowprof run), checked
    again under the lock. Staging folders that a killed run left (its process is gone) are
    removed by the next run into the same parent. On an exception (KeyboardInterrupt included)
    the staging folder is removed and ``path`` is left as it was.
    """
    path = Path(os.path.realpath(path))
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.flowprof-{os.getpid()}-", dir=path.parent)
    )
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
    try:
        yield staging
        manifest = {
            **(run or {}),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": sorted(_files(staging)),
        }
        write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        with _locked(path.parent):
            check_replaceable(path)
            _remove_stale_staging(path)
            if path.exists():
                _exchange(staging, path)  # staging now holds the old set
            else:
                os.rename(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            import fcntl
        except ImportError:  # (no flock: Windows; the swap is still atomic, not serialised)
            yield
            return
        # (a file system without locks: the swap is still atomic, only not serialised)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield  # (closing the descriptor releases the lock)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders' names atomically; two renames where the OS cannot."""
    rename_exchange = 2  # RENAME_EXCHANGE of <linux/fs.h>
    at_fdcwd = -100
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it
        renameat2 = None
    if renameat2 is not None:
        ok = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
        if ok:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # (a file system without it)
            raise OSError(err, os.strerror(err), str(b))
    old = a.with_name(a.name + ".old")
    os.rename(b, old)
    os.rename(a, b)
    os.rename(old, a)


def _remove_stale_staging(path: Path) -> None:
    """Staging folders of ``path`` whose process is gone (a run killed before its swap)."""
    for entry in path.parent.glob(f".{glob.escape(path.name)}.flowprof-*-*"):
        pid = entry.name.removeprefix(f".{path.name}.flowprof-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (another user's process)
        return True
    return True
