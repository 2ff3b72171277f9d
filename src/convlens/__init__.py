"""convlens: open up convolutional networks -- what a trained CNN has learned and why it decides what it decides.

The core is small: :class:`Model` bundles (``load_model``), taps that record layers and swap backward rules,
composable objectives with one optimisation loop, and one streamed dataset scan. Every technique of the
"Visualizing and Understanding ConvNets" lecture is short code on top of it.
"""

from __future__ import annotations

from .adversarial import attack, fgsm, fool, ifgsm, pgd, transfer, universal_perturbation
from .attribute import (
    Unit,
    ablation_cam,
    cascading_randomization,
    class_activation_map,
    class_sum,
    deconvnet,
    deletion_insertion,
    eigen_cam,
    grabcut,
    grad_cam,
    grad_cam_pp,
    guided_backprop,
    guided_grad_cam,
    hires_cam,
    integrated_gradients,
    label_randomization,
    layer_cam,
    margin,
    occlusion,
    saliency,
    score_cam,
    smoothgrad,
    vanilla_gradient,
    xgrad_cam,
)
from .core import (
    Objective,
    OptimizeResult,
    Recorded,
    alpha_norm,
    channel,
    class_logit,
    class_logprob,
    feature_match,
    gram,
    gram_match,
    l2,
    layer_norm,
    neuron,
    optimize,
    total_variation,
)
from .core.params import FourierImage, PixelImage
from .core.taps import RULES, BackwardRule, StopForward, Tap, activations, backward_rule
from .errors import UserError
from .images import demo_images, list_images, load_image, to_pil
from .models import (
    DEFAULT_MODEL,
    LayerIndex,
    LayerInfo,
    Model,
    Prediction,
    Preprocess,
    ReceptiveField,
    available_models,
    imagenet_labels,
    load_model,
    register,
)
from .read import (
    DeadUnits,
    Histogram,
    PooledFeatures,
    TopK,
    activation_maps,
    conv_filters,
    embed,
    empirical_receptive_field,
    linear_templates,
    load_dataset,
    neighbors,
    scan,
    top_patches,
    trustworthiness,
)
from .runtime import tune_allocator
from .study import corrupt, slice_accuracy
from .synthesize import (
    apply_fast_style,
    dream,
    invert,
    load_fast_style,
    multifaceted,
    style_transfer,
    synthesize_texture,
    train_fast_style,
    visualize_class,
    visualize_unit,
)

__version__ = "0.1.0"

__all__ = [
    "Model", "Prediction", "Preprocess", "LayerIndex", "LayerInfo", "ReceptiveField", "load_model", "register",
    "available_models", "imagenet_labels", "DEFAULT_MODEL",
    "Tap", "StopForward", "BackwardRule", "backward_rule", "activations", "RULES",
    "UserError", "load_image", "list_images", "demo_images", "to_pil", "tune_allocator",
    # core: objectives and the one optimisation loop
    "Objective", "Recorded", "OptimizeResult", "optimize", "class_logit", "class_logprob", "channel", "neuron",
    "layer_norm", "feature_match", "gram", "gram_match", "l2", "total_variation", "alpha_norm", "PixelImage",
    "FourierImage",
    # read
    "scan", "load_dataset", "PooledFeatures", "TopK", "DeadUnits", "Histogram", "conv_filters", "linear_templates",
    "activation_maps", "neighbors", "embed", "trustworthiness", "top_patches", "empirical_receptive_field",
    # attribute
    "Unit", "saliency", "vanilla_gradient", "guided_backprop", "deconvnet", "smoothgrad", "integrated_gradients",
    "grad_cam", "guided_grad_cam", "occlusion", "grabcut", "deletion_insertion",
    "class_activation_map", "grad_cam_pp", "xgrad_cam", "hires_cam", "layer_cam", "score_cam", "ablation_cam",
    "eigen_cam", "margin", "class_sum", "cascading_randomization", "label_randomization",
    # synthesize
    "visualize_class", "visualize_unit", "multifaceted", "dream", "invert", "synthesize_texture", "style_transfer",
    "train_fast_style", "apply_fast_style", "load_fast_style",
    # adversarial
    "fool", "fgsm", "ifgsm", "pgd", "attack", "transfer", "universal_perturbation",
    # show
    "run_tour", "build_microscope",
    # study
    "slice_accuracy", "corrupt", "human_report",
]


def __getattr__(name: str):
    if name == "run_tour":
        from .show.tour import run_tour
        return run_tour
    if name == "human_report":  # Flask is an optional extra; the report itself does not need it
        from .study.human import human_report
        return human_report
    if name == "build_microscope":
        from .show.microscope import build_microscope
        return build_microscope
    raise AttributeError(f"module 'convlens' has no attribute {name!r}")
