"""The zoo sweep's shared parts: architectures with random weights (no downloads) and every library recipe at
cheap settings. Used by tests/test_zoo_sweep.py and benchmarks/bench_zoo_sweep.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import convlens

TORCHVISION = ["alexnet", "vgg11", "resnet18", "googlenet", "inception_v3", "densenet121", "squeezenet1_1",
               "shufflenet_v2_x0_5", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
               "efficientnet_v2_s", "regnet_y_400mf", "convnext_tiny"]
TIMM = ["resnet18", "efficientnet_b0", "mobilenetv3_small_050", "convnext_atto", "regnetx_002", "ghostnet_050"]
ARCHS = [f"torchvision:{n}" for n in TORCHVISION] + [f"timm:{n}" for n in TIMM]
CLASSES = 10


def build(spec: str) -> convlens.Model:
    """``spec`` with random weights (seeded), ``CLASSES`` classes, wrapped at a small input size."""
    torch.manual_seed(0)
    lib, name = spec.split(":")
    if lib == "torchvision":
        import torchvision

        kw: dict = {"num_classes": CLASSES}
        if name in ("googlenet", "inception_v3"):
            kw.update(aux_logits=False, init_weights=True)
        net = getattr(torchvision.models, name)(**kw)
    else:
        import timm

        net = timm.create_model(name, pretrained=False, num_classes=CLASSES)
    with torch.no_grad():  # ConvNeXt initialises its layer scales to 1e-6: every residual branch (and its GELU)
        for pname, p in net.named_parameters():  # then barely counts; trained networks have scales near 1
            if pname.endswith(("layer_scale", "gamma")) and p.dim() <= 3 and float(p.abs().max()) <= 1e-5:
                p.fill_(1.0)
    size = 80 if name == "inception_v3" else 64
    return convlens.Model.wrap(net.eval(), size=size, name=spec, labels=[f"class{i}" for i in range(CLASSES)])


def photos(folder: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(72, 72, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def recipes(model: convlens.Model, folder: Path) -> dict[str, Callable[[], object]]:
    """Every library recipe, cheap: name -> a call that raises on failure."""
    from convlens.adversarial import fool, pgd
    from convlens.attribute import METHODS, grabcut, guided_backprop, saliency, vanilla_gradient
    from convlens.attribute.explain import explain
    from convlens.read import (
        DeadUnits,
        activation_maps,
        conv_filters,
        embed,
        empirical_receptive_field,
        neighbors,
        scan,
        top_patches,
    )
    from convlens.synthesize import dream, invert, style_transfer, synthesize_texture, visualize_class, visualize_unit

    h = model.preprocess.size[0]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, h, h, generator=g)
    stages = model.layers.stages()
    mid = stages[len(stages) // 2]
    early = model.layers.stem()

    def guided_differs() -> None:
        gb, v = guided_backprop(model, x, 1), vanilla_gradient(model, x, 1)
        assert torch.isfinite(gb).all() and _rel(gb, v) > 1e-3, f"guided == gradient ({_rel(gb, v):.1e})"

    def all_saliency() -> None:  # the saliency command's recipe, every method
        opts = {"smoothgrad": {"samples": 2}, "integrated": {"steps": 2}, "rise": {"masks": 8},
                "occlusion": {"window": h // 2, "stride": h // 2}}
        exp = explain(model, x[:1], list(METHODS), 1, options=opts, generator=g)
        for m, r in exp.targets[0].maps.items():
            assert r.map.shape == (h, h) and torch.isfinite(r.map).all(), m
        assert exp.to_dict()["methods"]["guided"]["report"].changed > 0

    def seg() -> None:
        grabcut(x[:1], saliency(model, x[:1], "gradient", 1))

    def emb() -> None:
        codes = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
        embed(codes, "tsne", perplexity=5, measure=False)

    return {
        "filters": lambda: conv_filters(model),
        "activations": lambda: activation_maps(model, x[0], mid),
        "neighbors": lambda: neighbors(model, folder, k=2, progress=False),
        "embed": emb,
        "top-patches": lambda: top_patches(model, folder, mid, channels=[0, 1], k=2, progress=False),
        "receptive-field": lambda: empirical_receptive_field(model, x[:1], early, 0, occluder=9, stride=12),
        "dead-units": lambda: scan(model, folder, [DeadUnits(stages[:2])], progress=False),
        "saliency(all)": all_saliency,
        "guided!=gradient": guided_differs,
        "grabcut": seg,
        "visualize-class": lambda: visualize_class(model, 1, preset="simonyan", steps=2),
        "visualize-unit": lambda: visualize_unit(model, mid, 0, preset="simonyan", steps=2),
        "dream": lambda: dream(model, x[:1], octaves=1, steps=2, max_side=None),
        "invert": lambda: invert(model, x[:1], steps=2),
        "texture": lambda: synthesize_texture(model, x[:1], size=(h, h), steps=2, sample_size=None),
        "style": lambda: style_transfer(model, x[:1], [x[1:]], size=h, steps=2),
        "fool": lambda: fool(model, x[:1], 3, max_steps=2),
        "attack": lambda: pgd(model, x, 0, steps=2, generator=torch.Generator().manual_seed(1)),
    }


def sweep(spec: str, folder: Path) -> dict[str, tuple[str, float]]:
    """Run every recipe on ``spec``: name -> (``ok`` or the error line, seconds)."""
    model = build(spec)
    out = {}
    for name, call in recipes(model, folder).items():
        t = time.perf_counter()
        try:
            call()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is reported in the table
            status = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        out[name] = (status, time.perf_counter() - t)
    return out
