"""The run directory: its one reader (``Run``), its one writer's policy (``RunDirectory``: new, resume,
auto-resume, force, the lock, the run files), checkpoints and the metrics log (how tables name what a
run trained, ``method_label``, is in ``pjepa.methods``: the words come from the plug-ins).

Training writes a run directory; evaluation, tables and figures read it through
``Run``. Nothing here imports ``train``, ``eval`` or ``methods``. Every file is written through
``pjepa.atomic``; its ``atomic_write_bytes`` can be imported from here too.
"""

from pjepa.atomic import atomic_write_bytes
from pjepa.runs.checkpoint import (
                                   checkpoint_path,
                                   checkpoint_step,
                                   keep_history,
                                   load_checkpoint,
                                   load_weights_into,
                                   save_checkpoint,
)
from pjepa.runs.device import resolve_device
from pjepa.runs.directory import RunDirectory, Start
from pjepa.runs.lock import RunLock, writer
from pjepa.runs.metrics import MetricsLogger, read_metrics
from pjepa.runs.precision import ResolvedPrecision, from_record, legacy_precision
from pjepa.runs.run import Run, check_resume_overrides, is_legacy, seed_lane, seed_named

__all__ = [
    "MetricsLogger",
    "Run",
    "RunDirectory",
    "ResolvedPrecision",
    "RunLock",
    "Start",
    "writer",
    "check_resume_overrides",
    "atomic_write_bytes",
    "checkpoint_path",
    "checkpoint_step",
    "from_record",
    "is_legacy",
    "seed_lane",
    "seed_named",
    "keep_history",
    "legacy_precision",
    "load_checkpoint",
    "load_weights_into",
    "read_metrics",
    "resolve_device",
    "save_checkpoint",
]
