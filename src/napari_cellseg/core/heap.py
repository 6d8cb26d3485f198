"""Keeping Python's full garbage collections short while napari's event loop runs beside our threads.

A full collection walks every tracked object with the interpreter lock held, in whichever thread it
happens: with napari, torch and ultralytics imported that is millions of objects, 300-1300 ms on a
2-core machine, during which napari's GUI thread cannot run (ultralytics' trainer also asks for one
itself during and after training). ``gc.freeze()`` moves the objects alive now (the imported
modules, napari's viewer) into a permanent generation that later collections skip, so those walk
only what was made since.
"""
from __future__ import annotations

import gc


def settle_heap(collect: bool = True) -> None:
    """Freeze the objects alive now out of later collections; ``collect`` first frees the garbage there
    is (a full collection, once). Without it nothing is walked, and the little garbage there is now
    stays in memory (a worker thread about to train uses this: its own stall would be the one avoided)."""
    if collect:
        gc.collect()
    gc.freeze()


def release_frozen() -> None:
    """Let collections walk every object again (before long-lived objects are dropped, e.g. a model
    replaced by another, so that their reference cycles can be freed); ``settle_heap`` freezes again."""
    gc.unfreeze()
