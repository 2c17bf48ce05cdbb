"""Studies built on pjepa's public API (``pjepa.studies.generative``: the generative study, ``pjepa gen study``).

A study reads run directories and loads encoders the way any user of the package would; the core
(training, evaluation, figures) never imports a study.
"""
