"""Figures and the HTML report, made from run directories (``pjepa plot``, ``pjepa report``).

Each module is one figure family. They read runs only through ``pjepa.runs.Run`` and
evaluation results (``RUN/eval/*.json``), never import the training loop, and run a
model only where the figure needs the run's encoder or head (mask layout: the sampler
alone; sampled distributions, imagination, t-SNE: the checkpoint). matplotlib is the
optional ``viz`` extra: ``pip install 'pjepa[viz]'``.

A figure registers itself in its module (``FIGURES.register("name")(Figure(...))``, see
``pjepa.viz.figures``); every module of this package is imported here, so a new figure is
one new file.
"""

from pjepa.registry import import_modules

import_modules(__name__, __path__)  # each figure module registers its figures
