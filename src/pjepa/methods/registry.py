"""The method registry: ``train.method`` in a config picks an entry."""

from pjepa.registry import Registry

METHODS: Registry = Registry("method")
