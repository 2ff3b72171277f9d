"""Optimisation to image: class / unit / multifaceted visualization, DeepDream, feature inversion.

(Texture synthesis and style transfer live beside them in ``texture``, ``style`` and ``fast_style``.)
"""

from .dream import DEFAULT_DREAM_LAYER, dream
from .invert import DEFAULT_INVERT_LAYERS, InversionResult, invert
from .visualize import (PRESETS, MultifacetedResult, Preset, judge_probs, multifaceted, preset, visualize,
                        visualize_class, visualize_unit)

__all__ = ["visualize", "visualize_class", "visualize_unit", "multifaceted", "MultifacetedResult", "Preset",
           "PRESETS", "preset", "judge_probs", "dream", "DEFAULT_DREAM_LAYER", "invert", "InversionResult",
           "DEFAULT_INVERT_LAYERS"]
