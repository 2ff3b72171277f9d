"""A dataset: a folder of images (found recursively, labelled by an ImageFolder layout or a ``labels.csv``), a text
file listing image paths, or WebDataset-style ``.tar`` shards.

A member of a ``.tar`` shard is addressed as ``shard.tar/key.jpg`` (the shard's path, then the member's name); it is
read where it is decoded (in a scan's worker), straight from its offset in the shard, never unpacked to disk.
WebDataset's convention gives the labels: a ``key.cls`` member (a class index) beside ``key.jpg``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from ..images import IMAGE_SUFFIXES, ImageLike, list_images

__all__ = ["LIST_SUFFIXES", "Dataset", "load_dataset", "read_path_list", "tar_member_image", "tar_samples"]

LIST_SUFFIXES = {".txt", ".lst", ".list"}
_LABEL_SUFFIXES = (".cls", ".label")

_LABEL_COLUMNS = ("label", "class_index", "class", "name")


@dataclass
class Dataset:
    """Image files with optional labels.

    Attributes:
        files: image paths, in a fixed (sorted) order.
        labels: one label per file (``None`` where unknown), or ``None`` when the dataset has no labels.
        ids: each file's position in the whole dataset; a slice keeps them, so reducers fed by two half-scans
            merge into exactly what one full scan gives.
        root: the folder the dataset was read from (or ``None`` for a list of files).
        source_key: for a path list or ``.tar`` shards, what the fingerprint hashes instead of statting every file
            (the list's / shards' paths, sizes and modification times), so a million-image list is not statted.
    """

    files: list[Path]
    labels: list[str | int | None] | None = None
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    root: Path | None = None
    source_key: str | None = None

    def __post_init__(self) -> None:
        self.files = [Path(f) for f in self.files]
        if len(self.ids) != len(self.files):
            self.ids = np.arange(len(self.files), dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.files):
            raise ValueError(f"{len(self.labels)} labels for {len(self.files)} files")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> Dataset:
        """A sub-dataset (a slice or a list of positions) that keeps the original ``ids``."""
        pos = np.arange(len(self.files))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        return Dataset([self.files[i] for i in pos], None if self.labels is None else [self.labels[i] for i in pos],
                       self.ids[pos].copy(), self.root, self.source_key)

    def names(self) -> list[str]:
        """File names relative to the root (or as given)."""
        if self.root is None:
            return [str(f) for f in self.files]
        out = []
        for f in self.files:
            try:
                out.append(str(f.relative_to(self.root)))
            except ValueError:
                out.append(str(f))
        return out

    def fingerprint(self) -> str:
        """A hash of every file's path, size and modification time (what the feature cache is keyed on)."""
        h = hashlib.sha1()
        if self.source_key is not None:
            h.update(self.source_key.encode())
            for f in self.files:
                h.update(f"{f}\n".encode())
            return h.hexdigest()[:16]
        for f in self.files:
            try:
                st = f.stat()
                h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{f}|missing\n".encode())
        return h.hexdigest()[:16]


def _read_labels_csv(path: Path, root: Path) -> dict[str, str | int]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.lower().strip(): c for c in reader.fieldnames or []}
        if "file" not in cols:
            raise UserError(f"{path} needs a 'file' column (and a 'label' column), found: {', '.join(cols)}")
        col = next((cols[c] for c in _LABEL_COLUMNS if c in cols), None)
        if col is None:
            raise UserError(f"{path} needs a 'label' column beside 'file', found: {', '.join(cols)}")
        out: dict[str, str | int] = {}
        for row in reader:
            value = row[col].strip()
            out[os.path.normpath(row[cols["file"]].strip())] = int(value) if value.lstrip("-").isdigit() else value
    return out


def load_dataset(source: str | os.PathLike | Dataset | Iterable[ImageLike], *, labels: str | os.PathLike | None = None,
                 limit: int | None = None) -> Dataset:
    """Find the images of a dataset and their labels.

    ``source`` is a folder (searched recursively), a list of files, or a :class:`Dataset` (returned as is); at
    scale also a text file (``.txt``/``.lst``) listing image paths (:func:`read_path_list`), or WebDataset-style
    ``.tar`` shards: one, a list of them, or a folder holding only shards (:func:`tar_samples`). Labels come from, in order: ``labels`` (a CSV with ``file,label`` columns, ``file`` relative to the
    folder), a ``labels.csv`` in the folder (any case; ``class_index`` or ``name`` columns also count as labels),
    or an ImageFolder layout (every image one folder down, the folder name is the label). ``limit`` keeps the
    first ``limit`` files (evenly spread over the sorted list, so every class stays represented).
    """
    if isinstance(source, Dataset):
        return source
    if not isinstance(source, (str, os.PathLike)):
        source = list(source)  # read once: a generator is consumed by the checks below
    if isinstance(source, (str, os.PathLike)) and _is_list(Path(source)):
        ds = read_path_list(source)
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir() and _tars_only(Path(source)):
        ds = _tar_dataset(sorted(p for p in Path(source).rglob("*.tar") if p.is_file()), root=Path(source))
    elif not isinstance(source, (str, os.PathLike, Dataset)) and _all_tars(source):
        ds = _tar_dataset([Path(p) for p in source])  # type: ignore[union-attr,arg-type]
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        root = Path(source)
        files = list_images(root)
        table: dict[str, str | int] | None = None
        csv_path = Path(labels) if labels else next(
            (p for p in sorted(root.iterdir()) if p.name.lower() == "labels.csv"), None)
        if csv_path is not None:
            if not csv_path.is_file():
                raise UserError(f"no such labels file: {csv_path}")
            table = _read_labels_csv(csv_path, root)
        if table is not None:
            lab: list[str | int | None] | None = [table.get(os.path.normpath(str(f.relative_to(root)))) for f in files]
        else:
            parents = {f.parent for f in files}
            folder = len(parents) > 1 and all(p.parent == root for p in parents)
            lab = [f.parent.name for f in files] if folder else None
        ds = Dataset(files, lab, root=root)
    elif isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".tar" and Path(source).is_file():
        ds = _tar_dataset([Path(source)])
    else:
        items = [source] if isinstance(source, (str, os.PathLike)) else list(source)  # type: ignore[list-item]
        if any(not isinstance(i, (str, os.PathLike)) for i in items):
            raise UserError("a dataset is a folder, a text file listing images, .tar shards or a list of image files")
        ds = Dataset(list_images(items))  # type: ignore[arg-type]
    if not ds.files:
        raise UserError(f"no images found in {source} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if limit is not None and limit < len(ds):
        ds = ds[np.linspace(0, len(ds) - 1, limit).round().astype(np.int64)]
        ds.ids = np.arange(len(ds), dtype=np.int64)
    return ds


# -- a text file listing paths ------------------------------------------------------------------------------------
def _is_list(path: Path) -> bool:
    return path.suffix.lower() in LIST_SUFFIXES and path.is_file()


def _stat_key(paths: Sequence[Path]) -> str:
    parts = []
    for p in paths:
        try:
            st = p.stat()
            parts.append(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}|missing")
    return "\n".join(parts)


def read_path_list(path: str | os.PathLike) -> Dataset:
    """A dataset from a text file with one image path per line, optionally a tab and a label after it.

    Relative paths are relative to the list file's folder; blank lines and lines starting with ``#`` are skipped.
    A line may name a ``.tar`` shard (all its images are taken) or a member inside one (``shard.tar/key.jpg``).
    The files are not statted here (a million-line list stays fast): a missing one is skipped by the scan.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the path list {path}: {exc}") from None
    base = path.parent
    files: list[Path] = []
    labels: list[str | int | None] = []
    tars: list[Path] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, label = line.partition("\t")
        f = Path(name.strip()).expanduser()
        f = f if f.is_absolute() else base / f
        if f.suffix.lower() == ".tar":
            tars.append(f)
            sub = _tar_dataset([f])
            files += sub.files
            labels += sub.labels or [None] * len(sub.files)
            continue
        files.append(f)
        value = label.strip()
        labels.append((int(value) if value.lstrip("-").isdigit() else value) if value else None)
    if not files:
        raise UserError(f"the path list {path} names no images")
    has = any(lab is not None for lab in labels)
    return Dataset(files, labels if has else None, source_key=_stat_key([path, *tars]))


# -- WebDataset-style .tar shards ---------------------------------------------------------------------------------
_TAR_INDEX: dict[tuple[str, int, int], dict[str, tuple[int, int]]] = {}
_TAR_LOCK = threading.Lock()


def _tars_only(folder: Path) -> bool:
    has_tar = False
    for p in folder.rglob("*"):
        if p.is_file():
            suffix = p.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                return False
            has_tar = has_tar or suffix == ".tar"
    return has_tar


def _all_tars(source: object) -> bool:
    try:
        items = list(source)  # type: ignore[call-overload]
    except TypeError:
        return False
    return bool(items) and all(isinstance(i, (str, os.PathLike)) and str(i).lower().endswith(".tar") for i in items)


def _index(tar: Path) -> dict[str, tuple[int, int]]:
    """Member name -> (offset of its data, size) for every regular file of a ``.tar`` (read once per process)."""
    st = tar.stat()
    key = (str(tar.resolve()), st.st_size, st.st_mtime_ns)
    with _TAR_LOCK:
        found = _TAR_INDEX.get(key)
    if found is not None:
        return found
    try:
        with tarfile.open(tar, "r:") as tf:
            index = {m.name: (m.offset_data, m.size) for m in tf if m.isfile()}
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"not a readable .tar shard: {tar} ({type(exc).__name__})") from None
    with _TAR_LOCK:
        if len(_TAR_INDEX) > 4096:
            _TAR_INDEX.clear()
        _TAR_INDEX[key] = index
    return index


def _read(tar: Path, offset: int, size: int) -> bytes:
    with open(tar, "rb") as f:
        f.seek(offset)
        return f.read(size)


def tar_samples(tar: str | os.PathLike) -> list[tuple[Path, str | int | None]]:
    """The images of a WebDataset-style shard as ``(shard.tar/member, label)``, in the shard's order.

    A sample is the members sharing a key (the name up to its first dot after the last slash); its label is the
    content of ``key.cls`` (or ``key.label``): an integer class index, else the text.
    """
    tar = Path(tar)
    index = _index(tar)
    labels: dict[str, str | int] = {}
    for name, (offset, size) in index.items():
        if name.lower().endswith(_LABEL_SUFFIXES) and size < 4096:
            value = _read(tar, offset, size).decode("utf-8", "replace").strip()
            labels[_sample_key(name)] = int(value) if value.lstrip("-").isdigit() else value
    return [(tar / name, labels.get(_sample_key(name))) for name in index
            if Path(name).suffix.lower() in IMAGE_SUFFIXES]


def _sample_key(name: str) -> str:
    head, _, tail = name.rpartition("/")
    return f"{head}/{tail.split('.', 1)[0]}"


def _tar_dataset(tars: Sequence[Path], root: Path | None = None) -> Dataset:
    files: list[Path] = []
    labels: list[str | int | None] = []
    for tar in tars:
        if not tar.is_file():
            raise UserError(f"no such .tar shard: {tar}")
        for f, lab in tar_samples(tar):
            files.append(f)
            labels.append(lab)
    has = any(lab is not None for lab in labels)
    return Dataset(files, labels if has else None, root=root, source_key=_stat_key(list(tars)))


def _split_member(path: Path) -> tuple[Path, str] | None:
    """``shard.tar/a/b.jpg`` -> (``shard.tar``, ``a/b.jpg``), or ``None`` when no parent is a ``.tar`` file."""
    for parent in path.parents:
        if parent.suffix.lower() == ".tar" and parent.is_file():
            return parent, path.relative_to(parent).as_posix()
    return None


def tar_member_image(path: str | os.PathLike, *, draft: tuple[int, int] | None = None) -> Image.Image | None:
    """Decode the image ``shard.tar/member`` straight from the shard (``None`` if ``path`` is not inside a .tar).

    ``draft`` is Pillow's JPEG draft size, as for files. Raises :class:`UserError` for a missing or unreadable
    member.
    """
    split = _split_member(Path(path))
    if split is None:
        return None
    tar, name = split
    entry = _index(tar).get(name)
    if entry is None:
        raise UserError(f"no member {name} in {tar}")
    try:
        img = Image.open(io.BytesIO(_read(tar, *entry)))
        if draft is not None and img.format == "JPEG":
            img.draft("RGB", draft)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"not an image Pillow can read: {path} ({exc.__class__.__name__})") from None
    return img
