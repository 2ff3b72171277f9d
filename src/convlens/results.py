"""Results on disk: every command writes its pictures and one ``result.json`` beside them.

Every file a command saves goes through :func:`atomic_write`: the bytes are written to a temporary name in the
same folder, flushed, and renamed over the final name. An interrupted or failed write (Ctrl-C, a full disk, a
file-size limit) therefore never leaves a file that looks complete, and never truncates the previous one. A
failure says in one line what ran out (:class:`~convlens.errors.UserError`), not a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .errors import UserError

__all__ = ["write_result", "to_jsonable", "out_dir", "atomic_write", "write_bytes", "save_image", "save_array",
           "save_torch", "check_space", "open_memmap", "disk_error", "output_names", "written"]

_WRITTEN: dict[Path, int] = {}  # folder -> files this process finished writing there (the Ctrl-C line says so)

_UMASK = os.umask(0o22)
os.umask(_UMASK)

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is larger than allowed (file-size limit)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file of that name is in the way",
    errno.EISDIR: "that name is a folder",
    errno.ENAMETOOLONG: "the name is too long",
}


def disk_error(exc: OSError, path: str | os.PathLike, what: str = "write") -> UserError:
    """One clear line for an ``OSError`` met while writing ``path``: what ran out or what is in the way."""
    reason = _REASONS.get(exc.errno or -1, exc.strerror or exc.__class__.__name__)
    return UserError(f"cannot {what} {path}: {reason}")


@contextlib.contextmanager
def _file_size_signal() -> Iterator[None]:
    """Turn SIGXFSZ (``ulimit -f`` exceeded) into an ``EFBIG`` error instead of killing the process."""
    import signal
    import threading

    if not hasattr(signal, "SIGXFSZ") or threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except (ValueError, OSError):  # pragma: no cover - not allowed here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGXFSZ, old)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it is renamed to ``path``, else removed.

    So a reader only ever sees the previous complete file or the new complete file. The folder is created.
    ``OSError`` (full disk, unwritable folder, file-size limit) becomes a one-line :class:`UserError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, path.parent, "create the folder") from None
    tmp: str | None = None
    try:
        with _file_size_signal():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
            with os.fdopen(fd, mode) as fh:
                yield fh
                fh.flush()  # no fsync: the rename is atomic for every reader; power loss is not our case
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
            tmp = None
            _WRITTEN[path.parent] = _WRITTEN.get(path.parent, 0) + 1
    except OSError as exc:
        raise disk_error(exc, path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def written() -> dict[Path, int]:
    """How many files this process has finished writing through :func:`atomic_write`, per folder."""
    return dict(_WRITTEN)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as fh:
        fh.write(data)
    return Path(path)


def save_image(image: Any, path: str | os.PathLike, *, format: str | None = None, **params: Any) -> Path:
    """Save a ``PIL.Image`` atomically; the format comes from the file name (``.png``, ``.gif``, ...)."""
    path = Path(path)
    buf = io.BytesIO()
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower(),
                                                                                 path.suffix[1:].upper() or "PNG")
    image.save(buf, format=fmt, **params)
    return write_bytes(path, buf.getvalue())


def save_array(path: str | os.PathLike, array: Any) -> Path:
    """``np.save`` atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return write_bytes(path, buf.getvalue())


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (checkpoints, perturbations, trained networks)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())


def open_memmap(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any = np.float32) -> np.memmap:
    """A new ``.npy`` memory map whose disk blocks are reserved first, so a full disk is one line, not SIGBUS."""
    path = Path(path)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    check_space(path.parent, nbytes, what="the feature cache")
    try:
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        if hasattr(os, "posix_fallocate") and nbytes:
            fd = os.open(path, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, os.path.getsize(path))
            finally:
                os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise disk_error(exc, path) from None
    return arr


def check_space(path: str | os.PathLike, nbytes: int, *, what: str = "the file", margin: int = 16 << 20) -> None:
    """Raise a one-line :class:`UserError` when the disk holding ``path`` has less than ``nbytes`` free.

    Call it before memory-mapping a file of that size: a full disk under a memory map is a SIGBUS, not an error.
    """
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < nbytes + margin:
        raise UserError(f"not enough disk space for {what} at {path}: needs {nbytes / 2**20:.0f} MiB, "
                        f"{free / 2**20:.0f} MiB free")


def to_jsonable(value: Any) -> Any:
    """Turn tensors, arrays, dataclasses and paths into plain JSON values (NaN/inf become ``null``)."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def out_dir(out: str | Path | None, command: str) -> Path:
    """The output folder (default ``convlens-out/<command>/``), created; one line if it cannot be."""
    path = Path(out) if out else Path("convlens-out") / command
    if path.exists() and not path.is_dir():
        raise UserError(f"cannot use {path} as the output folder: it is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, path, "create the output folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into the output folder {path}: permission denied")
    return path


def write_result(directory: str | Path, command: str, data: dict[str, Any], **meta: Any) -> Path:
    """Write ``result.json`` atomically: the command, its parameters (``meta``) and the numbers found (``data``)."""
    path = Path(directory) / "result.json"
    doc = {"command": command, **to_jsonable(meta), **to_jsonable(data),
           "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__, "python": platform.python_version()}
    return write_bytes(path, json.dumps(doc, indent=2).encode())


def output_names(files: Sequence[str | os.PathLike], suffix: str = ".png", *, tag: str = "") -> list[str]:
    """One output name per input file, unique and traceable: the input's path below the inputs' common folder.

    ``a/x.jpg`` and ``b/x.jpg`` become ``a/x<tag>.png`` and ``b/x<tag>.png`` (sub-folders are kept); two inputs
    that differ only by extension (``x.jpg``, ``x.png``) keep it in the name (``x_jpg<tag>.png``).
    """
    paths = [Path(os.path.abspath(f)) for f in files]
    if not paths:
        return []
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    rel = [p.relative_to(root) for p in paths]
    stems = [r.with_name(r.stem + tag + suffix) for r in rel]
    seen: dict[Path, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    out = []
    for r, s in zip(rel, stems):
        if seen[s] > 1:
            s = r.with_name(f"{r.stem}_{r.suffix[1:].lower()}{tag}{suffix}")
        out.append(s.as_posix())
    if len(set(out)) != len(out):  # the same file given twice: number the repeats
        count: dict[str, int] = {}
        for i, name in enumerate(out):
            count[name] = count.get(name, 0) + 1
            if count[name] > 1:
                out[i] = str(Path(name).with_name(f"{Path(name).stem}_{count[name]}{suffix}"))
    return out
