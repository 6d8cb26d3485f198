"""Thin napari widgets: they map layers to core calls and results back to layers."""
import sys


def _keep_triton_out_of_the_gui_process() -> None:
    """Importing triton (pulled in by torch on first model load) after an OpenGL
    context exists crashes the process on Mesa drivers: both bundle LLVM. Triton
    only serves torch.compile on GPUs, which inference here does not use, so
    inside the viewer torch is told that triton is not installed."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # import triton -> ImportError -> torch skips it


_keep_triton_out_of_the_gui_process()
