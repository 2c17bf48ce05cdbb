"""Command-line interface (``pjepa``)."""
