"""Predictor heads. A new head is one new file plus its import below."""

from pjepa.heads import autoregressive  # noqa: F401  (registers "autoregressive")
from pjepa.heads import deterministic  # noqa: F401  (registers "deterministic")
from pjepa.heads import diffusion  # noqa: F401  (registers "diffusion")
from pjepa.heads import flow  # noqa: F401  (registers "flow")
from pjepa.heads import flow_matching  # noqa: F401  (registers "flow_matching")
from pjepa.heads import mdn  # noqa: F401  (registers "mdn")
from pjepa.heads.base import PredictorHead
from pjepa.heads.registry import HEADS
from pjepa.config import migrate_flow_head
from pjepa.errors import ConfigError

__all__ = ["HEADS", "PredictorHead", "build_head"]


def build_head(name: str, cond_dim: int, embed_dim: int, **kwargs) -> PredictorHead:
    """Instantiate the registered head ``name`` (kwargs: its own settings).

    Options in the layout of an earlier release are migrated first (``flow`` with
    ``objective: flow_matching`` builds the ``flow_matching`` head).
    """
    name, kwargs = migrate_flow_head(name, kwargs)
    cls = HEADS.get(name)
    try:
        return cls(cond_dim, embed_dim, **kwargs)
    except TypeError as e:  # an unknown or missing option
        raise ConfigError(f"head {name!r} rejected head.options {kwargs}: {e}") from e
