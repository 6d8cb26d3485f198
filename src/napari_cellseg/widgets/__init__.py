"""Thin napari widgets: they map layers to core calls and results back to layers."""
