"""``python -m pjepa ...`` (also what ``torchrun -m pjepa`` runs)."""

import sys

from pjepa.cli.main import main

sys.exit(main())
