"""Attribute: which pixels matter -- gradients under backward rules, CAMs, occlusion, GrabCut, faithfulness.

Every method takes a pixel batch ``N x 3 x H x W`` (any size) and one target per image: a class index (``None``
means the predicted class) or a :class:`Unit` of any layer. Gradient methods return ``N x 3 x H x W``
attributions (:func:`to_map` collapses them); :func:`saliency` returns ``N x H x W`` maps for any method name.
"""

from ._common import TargetLike, Unit, to_map
from .cam import grad_cam, guided_grad_cam
from .gradients import deconvnet, guided_backprop, integrated_gradients, smoothgrad, vanilla_gradient
from .methods import CLASS_ONLY, METHODS, edge_map, random_map, saliency
from .metrics import Faithfulness, SaliencyEvaluation, deletion_insertion, deletion_insertion_many, evaluate_saliency
from .occlusion import FILLS, occlusion, occlusion_windows
from .rise import rise, rise_masks
from .segment import Segmentation, grabcut

__all__ = ["Unit", "TargetLike", "to_map", "vanilla_gradient", "guided_backprop", "deconvnet", "smoothgrad",
           "integrated_gradients", "grad_cam", "guided_grad_cam", "occlusion", "occlusion_windows", "FILLS",
           "METHODS", "CLASS_ONLY", "saliency", "edge_map", "random_map", "Faithfulness", "deletion_insertion",
           "Segmentation", "grabcut"]
__all__ += ["deletion_insertion_many", "SaliencyEvaluation", "evaluate_saliency", "rise", "rise_masks"]
