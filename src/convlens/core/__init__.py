"""The core: taps, backward rules, the forward-only reader (PyTorch or OpenVINO), objectives, image
parametrisations, per-step transforms and the one loop."""

from .engine import ENGINES, LayerReader, open_reader
from .objectives import (
                         Objective,
                         Recorded,
                         Sum,
                         alpha_norm,
                         channel,
                         class_logit,
                         class_logprob,
                         feature_match,
                         gram,
                         gram_match,
                         l2,
                         layer_guide,
                         layer_norm,
                         neuron,
                         total_variation,
)
from .optimize import L1SGD, OPTIMIZERS, OptimizeResult, evaluate, optimize
from .params import FourierImage, ImageParam, PixelImage, fourier_image, pixel_image
from .taps import RULES, BackwardRule, StopForward, Tap, activations, backward_rule
from .transforms import (
                         Blur,
                         ClipContribution,
                         ClipNorm,
                         Decay,
                         Jitter,
                         Pad,
                         PostStep,
                         RandomRotate,
                         RandomScale,
                         Transform,
                         gaussian_blur,
                         jitter,
                         standard_transforms,
                         unjitter,
)

__all__ = [
    "Tap", "StopForward", "BackwardRule", "backward_rule", "activations", "RULES",
    "open_reader", "LayerReader", "ENGINES",
    "Objective", "Recorded", "Sum", "class_logit", "class_logprob", "channel", "neuron", "layer_norm", "layer_guide",
    "feature_match", "gram", "gram_match", "l2", "total_variation", "alpha_norm",
    "ImageParam", "PixelImage", "FourierImage", "pixel_image", "fourier_image",
    "Transform", "Pad", "Jitter", "RandomScale", "RandomRotate", "jitter", "unjitter", "standard_transforms",
    "PostStep", "Blur", "Decay", "ClipNorm", "ClipContribution", "gaussian_blur",
    "optimize", "OptimizeResult", "L1SGD", "OPTIMIZERS", "evaluate",
]
