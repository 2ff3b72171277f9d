"""convlens: open up convolutional networks -- what a trained CNN has learned and why it decides what it decides.

The core is small: :class:`Model` bundles (``load_model``), taps that record layers and swap backward rules,
composable objectives with one optimisation loop, and one streamed dataset scan. Every technique of the
"Visualizing and Understanding ConvNets" lecture is short code on top of it.
"""

from __future__ import annotations

from .core.taps import RULES, BackwardRule, StopForward, Tap, activations, backward_rule
from .errors import UserError
from .images import demo_images, list_images, load_image, to_pil
from .models import (DEFAULT_MODEL, LayerIndex, LayerInfo, Model, Prediction, Preprocess, ReceptiveField,
                     available_models, imagenet_labels, load_model, register)
from .runtime import tune_allocator

__version__ = "0.1.0"

__all__ = [
    "Model", "Prediction", "Preprocess", "LayerIndex", "LayerInfo", "ReceptiveField", "load_model", "register",
    "available_models", "imagenet_labels", "DEFAULT_MODEL",
    "Tap", "StopForward", "BackwardRule", "backward_rule", "activations", "RULES",
    "UserError", "load_image", "list_images", "demo_images", "to_pil", "tune_allocator",
]
