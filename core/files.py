"""Files: reading one once, destination checks, claims on destinations, atomic writes. Only regular files are ever replaced."""

import contextlib
import errno
import os
import re
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from charlstm.core.errors import BadInput, WriteFailed

try:
    import fcntl
except ImportError:  # Windows: no claims (docs/formats.md)
    fcntl = None

TMP_MARK = ".charlstm-"  # temporary files: .NAME.charlstm-XXXXXXXX.tmp beside NAME
LOCK = ".{name}.lock"  # the claim on NAME, held while a run writes it
CACHE_SUFFIX = ".charlstm-ids"  # corpus caches (train/prepare.py): never an output's name


def read_regular(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of the regular file `path` (`what` names it in messages), read once: the file
    is checked as it is opened (a pipe or a device may never end), not looked up before."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except OSError as e:
        raise BadInput(f"cannot read {what} {path} ({e.strerror})") from None
    kind = _kind(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise BadInput(f"{what} {path} is {kind if kind.startswith('a ') else 'something else'}, not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except OSError as e:
            raise BadInput(f"cannot read {what} {path} ({e.strerror})") from None


def _kind(mode: int) -> str | None:
    """What a file that charlstm must not replace is, or None for a regular file."""
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), None if stat.S_ISREG(mode) else "not a regular file")


def resolve_destination(path: str | os.PathLike) -> Path:
    """The file a write to `path` replaces: a symlink is written through (the link stays and
    points to the new file), so the target is what must be writable. A link that another user
    owns is never followed: in a shared folder it is how one user makes another's run replace
    a file of the link's choosing."""
    path = Path(path)
    for _ in range(40):  # the kernel's own bound on a chain of links
        try:
            info = os.lstat(path)
        except OSError:
            break
        if not stat.S_ISLNK(info.st_mode):
            break
        if info.st_uid != os.geteuid():
            raise BadInput(f"{path} is a symbolic link owned by another user; charlstm does not write through it:"
                           " remove it or choose another path")
        path = path.parent / os.readlink(path)
    return Path(os.path.realpath(path))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def check_apart(outputs, inputs: dict[str, str | os.PathLike | None]) -> None:
    """BadInput, before any work, if a file to be written is a file to be read: the same path
    once links are resolved, or the same file under another name (a hard link: same device and
    inode). `inputs` maps what each input is ("the corpus") to its path (None: not given)."""
    read = [(what, Path(p), Path(os.path.realpath(p)), _identity(Path(p))) for what, p in inputs.items()
            if p is not None]
    for out in outputs:
        out = Path(out)
        if out.name.endswith(CACHE_SUFFIX):
            raise BadInput(f"{out}: names ending in {CACHE_SUFFIX} are charlstm's corpus caches; choose another"
                           " output path")
        target, same = Path(os.path.realpath(out)), _identity(out)
        for what, path, resolved, identity in read:
            if target == resolved or (same is not None and same == identity):
                raise BadInput(f"writing {out} would overwrite {what} {path}; choose another output path")


def check_writable_destination(path: str | os.PathLike) -> Path:
    """Fail early, before any work, if `path` cannot be written: its folder must exist and be
    writable, and an existing file there must be a regular file (never a device, pipe, socket
    or directory). Returns `path` as given."""
    path = Path(path)
    target = resolve_destination(path)
    try:
        kind = _kind(target.stat().st_mode)
    except FileNotFoundError:
        kind = None
    except OSError as e:
        raise BadInput(f"cannot check {path} ({e.strerror})") from None
    if kind is not None:
        via = f" (the target of the link {path})" if path.is_symlink() else ""
        raise BadInput(f"{target}{via} is {kind}; charlstm replaces regular files only: choose another path")
    if not target.parent.is_dir():
        raise BadInput(f"folder {target.parent} does not exist; create it or choose another path")
    if not os.access(target.parent, os.W_OK):
        raise BadInput(f"folder {target.parent} is not writable")
    return path


def _link_itself(path: Path) -> Path:
    """`path` in its real folder, to be replaced whatever it is, link included, but never a
    directory, device, pipe or socket."""
    folder = Path(os.path.realpath(path.parent))
    target = folder / path.name
    with contextlib.suppress(FileNotFoundError):
        mode = os.lstat(target).st_mode
        if not stat.S_ISLNK(mode) and _kind(mode) is not None:
            raise BadInput(f"{target} is {_kind(mode)}; charlstm replaces regular files only: choose another path")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise BadInput(f"folder {folder} does not exist or is not writable")
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, follow_links: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on success rename it over `path`, else remove it.

    Readers see either the old file or the whole new one, never a truncated file. A symlink at
    `path` is written through (resolve_destination) or, with follow_links=False (caches), itself
    replaced by the new file."""
    target = resolve_destination(check_writable_destination(path)) if follow_links else _link_itself(Path(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{TMP_MARK}", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise WriteFailed(f"cannot write {target} ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, target)
    except OSError as e:  # a full disk, a quota: what was there stays
        _remove(tmp)
        raise WriteFailed(f"writing {target} failed ({e.strerror}); it is as it was before, and the partial"
                          " copy was removed") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


_held: dict[Path, tuple[int, int, int]] = {}  # what this process claims: target -> (thread, depth, lock fd)


@contextlib.contextmanager
def claim(paths, holder: str | None = None) -> Iterator[None]:
    """Hold every destination in `paths` for this run: another run that claims one of them
    gets BadInput naming this one. Each claim is a kernel lock (flock) on `.NAME.lock` beside
    the file, so the lock of a killed run vanishes with it; the lock files are removed when the
    claim ends. Once claimed, temporary files left beside a destination by a killed write are
    removed. A thread may claim again what it holds (a CLI claims before any work, then the
    API it calls claims the same files). `holder` describes this run in the other's message
    (default: the process id and command line)."""
    holder = holder or f"pid {os.getpid()}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}"
    taken: list[Path] = []
    try:
        for target in dict.fromkeys(resolve_destination(check_writable_destination(p)) for p in paths):
            _take(target, holder)
            taken.append(target)
        yield
    finally:
        for target in reversed(taken):
            _give_back(target)


def _take(target: Path, holder: str) -> None:
    thread = threading.get_ident()
    owner, depth, fd = _held.get(target, (thread, 0, -1))
    if owner != thread:
        raise BadInput(f"{target} is being written by another thread of this process; give each run its own output")
    if depth == 0:
        fd = _lock(target, holder)
        _remove_stale_temporaries(target)
    _held[target] = (thread, depth + 1, fd)


def _give_back(target: Path) -> None:
    thread, depth, fd = _held.pop(target)
    if depth > 1:
        _held[target] = (thread, depth - 1, fd)
    else:
        _unlock(target, fd)


def _lock_path(target: Path) -> Path:
    return target.with_name(LOCK.format(name=target.name))


LOCK_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC


def _open_lock(lock: Path) -> int:
    """The lock file, ours and regular: never through a link, a pipe or a directory, never
    another user's (planted in a shared folder, it could make us truncate what it points to)."""
    try:
        fd = os.open(lock, LOCK_FLAGS, 0o600)
    except OSError as e:
        kind = {errno.ELOOP: "a symbolic link", errno.EISDIR: "a directory"}.get(e.errno)
        raise BadInput(f"the lock file {lock} is {kind}; charlstm made no such thing: remove it" if kind else
                       f"cannot create the lock file {lock} ({e.strerror})") from None
    info = os.fstat(fd)
    problem = (_kind(info.st_mode) if not stat.S_ISREG(info.st_mode) else
               "owned by another user" if info.st_uid != os.geteuid() else None)
    if problem:
        os.close(fd)
        raise BadInput(f"the lock file {lock} is {problem}; charlstm made no such thing: remove it")
    return fd


def _lock(target: Path, holder: str) -> int:
    if fcntl is None:
        return -1
    lock = _lock_path(target)
    while True:
        fd = _open_lock(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise BadInput(f"{target} is being written by another run ({other}); wait for it to end,"
                           " or choose another output path") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:  # not a file an ending run just removed
                break
        os.close(fd)
    with contextlib.suppress(OSError):  # who holds it is a courtesy: a full disk does not stop the run here
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder}, since {time.strftime('%H:%M:%S')}".encode())
    return fd


def _unlock(target: Path, fd: int) -> None:
    if fd < 0:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_lock_path(target))  # while still locked: a waiting run then retries on a new file
    os.close(fd)


def _remove_stale_temporaries(target: Path) -> None:
    pattern = re.compile(rf"\.{re.escape(target.name)}{re.escape(TMP_MARK)}[a-z0-9_]{{8}}\.tmp")
    for entry in os.scandir(target.parent):
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False) and _mine(entry):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _mine(entry: os.DirEntry) -> bool:
    with contextlib.suppress(OSError):
        return entry.stat(follow_symlinks=False).st_uid == os.geteuid()
    return False
