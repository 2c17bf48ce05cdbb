"""The head registry: ``head.name`` in a config picks an entry."""

from pjepa.registry import Registry

HEADS: Registry = Registry("head")
