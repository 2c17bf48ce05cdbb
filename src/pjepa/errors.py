"""Exceptions for user errors.

User input (configs, paths, data files) is validated with these, never with
``assert``: every message names the bad value and says how to fix it.
"""


class PJepaError(Exception):
    """Base class of every error pjepa raises on purpose."""


class ConfigError(PJepaError, ValueError):
    """A config key or value is wrong (unknown key, bad type, out of range)."""


class DataError(PJepaError, ValueError):
    """A dataset path, file or its contents are wrong or missing."""


class CheckpointError(PJepaError, ValueError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""


class WeightsError(PJepaError, ValueError):
    """An encoder weights file, its architecture JSON or an official checkpoint is missing or does not fit."""
