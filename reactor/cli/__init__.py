"""The ``reactor`` command line (:func:`main`)."""

from reactor.cli.commands import main

__all__ = ["main"]
