"""The model zoo: ``create_model(name, ...)`` builds an SNN or its ANN twin."""

from . import imagenet_resnets, resnet, transformers, vgg  # noqa: F401  (registers the models)
from .base import ModelOutput, SpikingNet
from .registry import (
                       MODELS,
                       apply_repact,
                       checked_weights,
                       create_model,
                       load_twin_weights,
                       register_model,
)

__all__ = ["MODELS", "ModelOutput", "SpikingNet", "apply_repact", "checked_weights",
           "create_model", "load_twin_weights", "register_model"]
