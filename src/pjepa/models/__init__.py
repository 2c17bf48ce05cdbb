"""Encoders, the predictor trunk and the EMA update."""

from pjepa.models.ema import ema_update
from pjepa.models.predictor import PredictorTrunk
from pjepa.models.vit import VisionTransformer

__all__ = ["PredictorTrunk", "VisionTransformer", "ema_update"]
