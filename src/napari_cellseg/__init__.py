"""napari-cellseg: deep-learning cell segmentation in napari.

``from napari_cellseg import segment`` runs a model headless; heavy libraries are
imported only when used.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "segment", "segment_iter", "load_model", "SegmentationResult"]


def __getattr__(name):
    if name in ("segment", "segment_iter"):
        from .pipeline import segment as pipeline

        return getattr(pipeline, name)
    if name == "load_model":
        from .backends import load_model

        return load_model
    if name == "SegmentationResult":
        from .core.result import SegmentationResult

        return SegmentationResult
    raise AttributeError(name)
