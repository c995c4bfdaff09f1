"""Model zoo: small deterministic recipes with a hash-keyed safetensors cache, and EfficientNet-Lite0."""

from .cache import CacheCorrupted, cache_dir
from .models import ARCHITECTURES, ScaleShift, ZooEntry, ZooModel, is_cached, list_models, load, train, trainer
from .nets import MLP, ResNetSmall, SmallCNN, WideShallow
from .recipes import Normalize, Recipe, TrainResult, accuracy, train_recipe

__all__ = [
    "ARCHITECTURES",
    "MLP",
    "CacheCorrupted",
    "Normalize",
    "Recipe",
    "ResNetSmall",
    "ScaleShift",
    "SmallCNN",
    "TrainResult",
    "WideShallow",
    "ZooEntry",
    "ZooModel",
    "accuracy",
    "cache_dir",
    "is_cached",
    "list_models",
    "load",
    "train",
    "train_recipe",
    "trainer",
]
