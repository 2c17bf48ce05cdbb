"""pjepa: Joint-Embedding Predictive Architectures with probabilistic predictors."""

__version__ = "0.1.0"
