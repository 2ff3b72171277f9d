"""Attribute: which pixels matter -- gradients under backward rules, CAMs, occlusion, GrabCut, faithfulness.

Every method takes a pixel batch ``N x 3 x H x W`` (any size) and one target per image: a class index or name
(``None`` means the predicted class), a :class:`Unit` of any layer (or one per image), or an
:class:`OutputScore` on the model's output (:func:`margin`, :func:`class_sum`, any row-wise callable).
Gradient methods return ``N x 3 x H x W``
attributions (:func:`to_map` collapses them); :func:`saliency` returns ``N x H x W`` maps for any method name.
"""

from ._common import OutputScore, TargetLike, Unit, class_sum, margin, resolve_targets, to_map
from .cam import (
                  CAMS,
                  ablation_cam,
                  class_activation_map,
                  eigen_cam,
                  grad_cam,
                  grad_cam_pp,
                  guided_grad_cam,
                  hires_cam,
                  layer_cam,
                  score_cam,
                  xgrad_cam,
)
from .gradients import deconvnet, guided_backprop, integrated_gradients, smoothgrad, vanilla_gradient
from .greedy import greedy_insertion
from .methods import CAM_METHODS, CLASS_ONLY, METHODS, edge_map, random_map, saliency
from .metrics import Faithfulness, SaliencyEvaluation, deletion_insertion, deletion_insertion_many, evaluate_saliency
from .occlusion import FILLS, occlusion, occlusion_windows
from .rise import rise, rise_masks
from .sanity import SanityCheck, cascading_randomization, label_randomization
from .segment import Segmentation, grabcut

__all__ = ["Unit", "TargetLike", "to_map", "vanilla_gradient", "guided_backprop", "deconvnet", "smoothgrad",
           "integrated_gradients", "grad_cam", "guided_grad_cam", "occlusion", "occlusion_windows", "FILLS",
           "METHODS", "CLASS_ONLY", "saliency", "edge_map", "random_map", "Faithfulness", "deletion_insertion",
           "Segmentation", "grabcut",
           # the CAM family and any target
           "CAMS", "CAM_METHODS", "class_activation_map", "grad_cam_pp", "xgrad_cam", "hires_cam", "layer_cam",
           "score_cam", "ablation_cam", "eigen_cam", "OutputScore", "margin", "class_sum", "resolve_targets",
           # sanity checks
           "SanityCheck", "cascading_randomization", "label_randomization"]
__all__ += ["SaliencyEvaluation", "deletion_insertion_many", "evaluate_saliency", "rise", "rise_masks",
            "greedy_insertion"]
