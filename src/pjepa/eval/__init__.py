"""Evaluation of frozen features and heads: features, kNN, head metrics, the comparison table, and the protocols ``pjepa eval`` runs."""
