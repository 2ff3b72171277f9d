"""Optimisation to image: class / unit / multifaceted visualization, DeepDream, feature inversion.

Texture synthesis and neural style transfer (Gatys et al.), fast style transfer (Johnson et al.; Dumoulin et al.).
"""

from .dream import default_dream_layer, dream
from .fast_style import (
                         FastStyleConfig,
                         TransformNet,
                         apply_fast_style,
                         load_fast_style,
                         pretrained_path,
                         save_fast_style,
                         train_fast_style,
)
from .invert import InversionResult, default_invert_layers, invert
from .style import StyleResult, keep_colors, style_transfer
from .texture import GramStyle, GramTargets, TextureResult, content_layer, layer_sweep, style_layers, synthesize_texture
from .visualize import (
                         PRESETS,
                         MultifacetedResult,
                         Preset,
                         judge_probs,
                         multifaceted,
                         preset,
                         visualize,
                         visualize_class,
                         visualize_unit,
)

__all__ = ["visualize", "visualize_class", "visualize_unit", "multifaceted", "MultifacetedResult", "Preset",
           "PRESETS", "preset", "judge_probs", "dream", "default_dream_layer", "invert", "InversionResult",
           "default_invert_layers", "synthesize_texture", "layer_sweep", "TextureResult", "GramTargets", "GramStyle",
           "style_layers", "content_layer", "style_transfer", "StyleResult", "keep_colors", "TransformNet",
           "train_fast_style", "apply_fast_style", "load_fast_style", "save_fast_style", "FastStyleConfig",
           "pretrained_path"]
