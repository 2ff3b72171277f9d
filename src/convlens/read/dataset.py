"""A dataset is a folder of images: found recursively, labelled by an ImageFolder layout or a ``labels.csv``."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..images import IMAGE_SUFFIXES, ImageLike, list_images

__all__ = ["Dataset", "load_dataset"]

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
    """

    files: list[Path]
    labels: list[str | int | None] | None = None
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    root: Path | None = None

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
                       self.ids[pos].copy(), self.root)

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

    ``source`` is a folder (searched recursively), a list of files, or a :class:`Dataset` (returned as is).
    Labels come from, in order: ``labels`` (a CSV with ``file,label`` columns, ``file`` relative to the
    folder), a ``labels.csv`` in the folder (any case; ``class_index`` or ``name`` columns also count as labels),
    or an ImageFolder layout (every image one folder down, the folder name is the label). ``limit`` keeps the
    first ``limit`` files (evenly spread over the sorted list, so every class stays represented).
    """
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
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
    else:
        items = [source] if isinstance(source, (str, os.PathLike)) else list(source)  # type: ignore[list-item]
        if any(not isinstance(i, (str, os.PathLike)) for i in items):
            raise UserError("a dataset is a folder or a list of image files")
        ds = Dataset(list_images(items))  # type: ignore[arg-type]
    if not ds.files:
        raise UserError(f"no images found in {source} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if limit is not None and limit < len(ds):
        ds = ds[np.linspace(0, len(ds) - 1, limit).round().astype(np.int64)]
        ds.ids = np.arange(len(ds), dtype=np.int64)
    return ds
