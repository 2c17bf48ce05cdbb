"""The method registry: ``method.name`` in a config picks an entry, ``method.options`` its options."""

from pjepa.registry import Registry

METHODS: Registry = Registry("method")
