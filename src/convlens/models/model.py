"""The ``Model`` bundle: a network in eval mode, its preprocessing, its class names and its layer index."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..images import ImageLike
from .layers import LayerIndex
from .preprocess import Preprocess

__all__ = ["Model", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    """One of the top classes for an image: class index, its name and its softmax probability."""

    index: int
    label: str
    prob: float


class Model:
    """A trained network ready for convlens: call it on pixel-space batches ``Nx3xHxW`` in [0, 1].

    Normalisation is the model's business: ``model(x)`` applies ``preprocess.normalize`` and returns the
    unnormalised class scores (logits). Layers are addressed by their dotted ``named_modules()`` names of
    ``model.module``. A network passed to :meth:`wrap` is never changed: its training flags are switched to
    eval only for the duration of each call and put back.
    """

    def __init__(self, module: nn.Module, preprocess: Preprocess, *, labels: Sequence[str] | None = None,
                 name: str = "model", owned: bool = True) -> None:
        self.module = module
        self.preprocess = preprocess
        self.labels = list(labels) if labels is not None else None
        self.name = name
        self._owned = owned
        self._layers: LayerIndex | None = None
        if owned:
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def wrap(cls, module: nn.Module, *, mean: Sequence[float] = (0.485, 0.456, 0.406),
             std: Sequence[float] = (0.229, 0.224, 0.225), size: int | tuple[int, int] = 224,
             resize: int | None = None, interpolation: str = "bilinear", labels: Sequence[str] | None = None,
             name: str = "wrapped") -> Model:
        """Bundle any image classifier (or feature network) taking normalised ``Nx3xHxW`` input.

        The module is used as it is and never modified; ``mean``/``std`` are the normalisation it expects,
        ``size`` its input side (or ``(H, W)``), ``labels`` its class names if it has them.
        """
        hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        pre = Preprocess(size=hw, mean=tuple(mean), std=tuple(std),  # type: ignore[arg-type]
                         resize=resize or round(min(hw) / 0.875), interpolation=interpolation)
        return cls(module, pre, labels=labels, name=name, owned=False)

    # -- running ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Eval mode and frozen parameters for the duration (the caller's flags restored afterwards when the module
        is not ours)."""
        if self._owned:
            yield
            return
        flags = [(m, m.training) for m in self.module.modules()]
        # no gradients into the user's parameters either (they would be left in ``.grad``): the techniques
        # differentiate with respect to images only
        grads = [(p, p.requires_grad) for p in self.module.parameters()]
        self.module.eval()
        try:
            for p, _ in grads:
                p.requires_grad_(False)
            yield
        finally:
            for m, t in flags:
                m.training = t
            for p, g in grads:
                p.requires_grad_(g)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) ``NxK`` for a pixel-space batch ``Nx3xHxW`` in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a pixel batch Nx3xHxW, got shape {tuple(x.shape)}")
        with self.running():
            return self.module(self.preprocess.normalize(x))

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Model:
        self.module.to(device)
        return self

    # -- layers and classes -------------------------------------------------------------------------------
    @property
    def layers(self) -> LayerIndex:
        """The layer index (built on first use by one traced forward pass)."""
        if self._layers is None:
            with self.running():
                self._layers = LayerIndex.build(self.module, self.preprocess.size, self.preprocess.normalize)
        return self._layers

    def layer(self, name: str) -> nn.Module:
        """The module called ``name``; an unknown name raises :class:`UserError` listing the closest ones."""
        modules = dict(self.module.named_modules())
        if name in modules and name:
            return modules[name]
        return self.layers.module(name)

    @property
    def num_classes(self) -> int:
        if self.labels is not None:
            return len(self.labels)
        last = self.layers.classifier()
        return int(self.layers[last].shape[0]) if last else 0

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else str(index)

    def class_index(self, spec: int | str) -> int:
        """Resolve a class given as an index or a name (case-insensitive; exact name, then unique substring)."""
        n = self.num_classes
        if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().lstrip("-").isdigit()):
            idx = int(spec)
            if not 0 <= idx < n:
                raise UserError(f"class index {idx} out of range: this model has classes 0-{n - 1}")
            return idx
        if not self.labels:
            raise UserError(f"this model has no class names; give a class index 0-{n - 1}")
        key = spec.strip().lower().replace("_", " ")
        exact = [i for i, lab in enumerate(self.labels) if lab.lower() == key]
        if exact:
            return exact[0]
        hits = [i for i, lab in enumerate(self.labels) if key in lab.lower()]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise UserError(f"no class called {spec!r}; give a class index 0-{n - 1} or a name such as "
                            f"{self.labels[0]!r}")
        shown = ", ".join(f"{i} {self.labels[i]!r}" for i in hits[:8])
        raise UserError(f"class {spec!r} is ambiguous: {shown}{' ...' if len(hits) > 8 else ''}")

    # -- convenience --------------------------------------------------------------------------------------
    def load(self, images: Sequence[ImageLike] | ImageLike, *, crop: bool = True) -> torch.Tensor:
        """Read images and fit them to the model input: a pixel batch ``Nx3xHxW`` on the model's device."""
        batch: list[ImageLike] = list(images) if isinstance(images, (list, tuple)) else [images]  # type: ignore[list-item]
        return self.preprocess.batch(batch, crop=crop).to(self.device)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, *, top: int = 5) -> list[list[Prediction]]:
        """Top classes with softmax probabilities for each image of a pixel batch."""
        probs = self(x).float().softmax(-1)
        values, indices = probs.topk(min(top, probs.shape[-1]), dim=-1)
        return [[Prediction(int(i), self.label(int(i)), float(v)) for v, i in zip(vs, ix)]
                for vs, ix in zip(values, indices)]

    def __repr__(self) -> str:
        return f"Model({self.name!r}, input={self.preprocess.size}, classes={len(self.labels or [])})"
