"""Pickles for the loaders' safety tests."""

from __future__ import annotations


class RunsCode:
    """Unpickling this creates ``marker`` (it reduces to ``open(marker, "w")``): ``weights_only`` must refuse first."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
