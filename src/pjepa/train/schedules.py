"""The schedules live in ``pjepa.schedules`` (the fine-tune protocol in ``eval`` uses them too, and
``eval`` does not import ``train``); this name stays for the loop and for existing imports."""

from pjepa.schedules import cosine, ema_momentum, learning_rate, linear, scaled_lr, weight_decay

__all__ = ["cosine", "ema_momentum", "learning_rate", "linear", "scaled_lr", "weight_decay"]
