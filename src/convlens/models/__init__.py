"""Models: the zoo, the ``Model`` bundle, preprocessing and the layer index."""

from .layers import LayerIndex, LayerInfo, ReceptiveField
from .model import Model, Prediction
from .preprocess import Preprocess
from .zoo import DEFAULT_MODEL, available_models, imagenet_labels, load_model, register, resolve_device

__all__ = ["Model", "Prediction", "Preprocess", "LayerIndex", "LayerInfo", "ReceptiveField", "load_model",
           "register", "available_models", "imagenet_labels", "resolve_device", "DEFAULT_MODEL"]
