"""Studies of a network's accuracy: by image attribute and corruption (:mod:`.slicing`), and against people
(:mod:`.human`)."""

from .corruptions import CORRUPTIONS, DEFAULT_CORRUPTIONS, Corruption, corrupt, corruption_names
from .slicing import (
                      ATTRIBUTES,
                      AttributeSlice,
                      Bin,
                      CorruptionCurve,
                      SliceResult,
                      bin_accuracy,
                      image_attributes,
                      object_scale,
                      resolve_labels,
                      slice_accuracy,
                      wilson,
)

__all__ = ["CORRUPTIONS", "DEFAULT_CORRUPTIONS", "Corruption", "corrupt", "corruption_names", "ATTRIBUTES",
           "AttributeSlice", "Bin", "CorruptionCurve", "SliceResult", "bin_accuracy", "image_attributes",
           "object_scale", "resolve_labels", "slice_accuracy", "wilson"]
