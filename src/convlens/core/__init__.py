"""The core: taps, backward rules, objectives and the one optimisation loop."""

from .taps import RULES, BackwardRule, StopForward, Tap, activations, backward_rule

__all__ = ["Tap", "StopForward", "BackwardRule", "backward_rule", "activations", "RULES"]
