"""Reference CNN models in plain PyTorch."""
from .efficientnet import (
    EfficientNet,
    calibrate_batchnorm,
    efficientnet_v2_l,
    efficientnet_v2_m,
    efficientnet_v2_s,
    seeded_model,
)

__all__ = [
    "EfficientNet",
    "calibrate_batchnorm",
    "efficientnet_v2_l",
    "efficientnet_v2_m",
    "efficientnet_v2_s",
    "seeded_model",
]
