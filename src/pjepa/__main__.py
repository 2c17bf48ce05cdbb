"""``python -m pjepa ...`` (also what ``torchrun -m pjepa`` runs)."""

from pjepa.cli import entry

entry()
