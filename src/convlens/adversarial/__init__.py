"""Fooling ConvNets: fooling images, FGSM / iterative FGSM / PGD, universal perturbations, transfer.

Everything works in [0, 1] pixel space with the model's normalisation inside, so ``eps=8/255`` is eight grey
levels, and every result lies exactly inside its eps-ball and the [0, 1] box (:func:`project`).
"""

from .attacks import ATTACKS, AttackReport, TransferReport, attack, evaluate_attack, fgsm, ifgsm, pgd, transfer
from .ball import NORMS, norms, project, quantize
from .fooling import FoolResult, fool
from .universal import UniversalResult, check_disjoint, fooling_rate, universal_perturbation

__all__ = [
           "ATTACKS",
           "NORMS",
           "AttackReport",
           "FoolResult",
           "TransferReport",
           "UniversalResult",
           "attack",
           "check_disjoint",
           "evaluate_attack",
           "fgsm",
           "fool",
           "fooling_rate",
           "ifgsm",
           "norms",
           "pgd",
           "project",
           "quantize",
           "transfer",
           "universal_perturbation",
]
