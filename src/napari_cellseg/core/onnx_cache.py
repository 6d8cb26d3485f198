"""ONNX Runtime inference on the CPU: networks exported once, cached, checked by checksum.

A backend that can run on ONNX Runtime exports its network the first time it is loaded on the CPU
and keeps the ``.onnx`` file beside the weights (``<weights>.<sha256 of the weights, 12 digits>.onnx``)
or, where that folder is read-only (an installed package), in the user cache folder
(``platformdirs.user_cache_dir("napari-cellseg")/onnx``). The file records the full sha256 of the
weights it came from, the export recipe's version and what the backend needs to run without the
weights (its settings and class names), so a cached model is used only for the very weights it was
made from, and loading it needs neither torch nor ultralytics.

Which engine a backend uses (``engine``):
    "auto"  ONNX Runtime on the CPU where ``onnxruntime`` is installed, else torch; CUDA and Apple MPS
            stay on torch;
    "onnx"  ONNX Runtime (an error where it cannot be used);
    "torch" torch always.
The environment variable ``NAPARI_CELLSEG_ENGINE`` sets the default of "auto" callers. An export or
a session that fails under "auto" falls back to torch with a warning on the backend
(``engine_note``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import warnings
from pathlib import Path

ENGINES = ("auto", "onnx", "torch")
ENGINE_ENV = "NAPARI_CELLSEG_ENGINE"
CACHE_ENV = "NAPARI_CELLSEG_CACHE_DIR"  # overrides the user cache folder (tests, shared installs)


def default_engine(engine: str | None = None) -> str:
    engine = (engine or os.environ.get(ENGINE_ENV) or "auto").lower()
    if engine not in ENGINES:
        raise ValueError(f"unknown inference engine '{engine}'; use one of {', '.join(ENGINES)}")
    return engine


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def cpu_without_torch(device: str | None) -> bool:
    """True when ``device`` certainly resolves to the CPU, decided without importing torch: "cpu", or
    "auto" on a machine with no CUDA driver library (torch cannot use a GPU there) that is not a Mac
    (Apple MPS). Anything else is left to ``resolve_device`` (which imports torch)."""
    device = (device or "auto").lower()
    if device == "cpu":
        return True
    if device != "auto" or sys.platform == "darwin":
        return False
    return not _cuda_driver_present()


def _cuda_driver_present() -> bool:
    import ctypes.util

    if os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia"):
        return True
    if sys.platform == "win32":
        return ctypes.util.find_library("nvcuda") is not None
    return ctypes.util.find_library("cuda") is not None


def use_onnx(engine: str | None, device: str) -> bool:
    """Whether a backend on ``device`` (resolved: "cpu", "cuda", "mps"...) runs on ONNX Runtime."""
    engine = default_engine(engine)
    if engine == "torch":
        return False
    if engine == "onnx":
        if not onnxruntime_available():
            raise ImportError("engine 'onnx' needs onnxruntime: pip install onnxruntime onnx")
        if device != "cpu":
            raise ValueError(f"engine 'onnx' runs on the CPU only (device '{device}'); use engine 'torch'")
        return True
    return device == "cpu" and onnxruntime_available()


def resolve_device_lazily(device: str | None) -> str:
    """``core.backend.resolve_device``, without importing torch where the answer is certainly "cpu"."""
    if cpu_without_torch(device):
        return "cpu"
    from .backend import resolve_device

    return resolve_device(device)


def user_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "onnx"
    from platformdirs import user_cache_dir as cache_dir

    return Path(cache_dir("napari-cellseg")) / "onnx"


def cache_candidates(weights: Path, sha256: str, tag: str) -> list[Path]:
    """Where the export of these weights lives: beside them first, then in the user cache folder."""
    name = f"{weights.stem}.{sha256[:12]}.{tag}.onnx"
    return [weights.parent / name, user_cache_dir() / name]


# the name ``cache_candidates`` gives an export: <weights stem>.<12 hex digits of its sha256>.<tag>.onnx
CACHE_NAME = re.compile(r"\.[0-9a-f]{12}\.[A-Za-z0-9_-]+\.onnx$")


def is_cache_file(path) -> bool:
    """Whether ``path`` is named like one of these cached exports (``*.<sha>.yolo.onnx``, ``*.<sha>.unet*.onnx``):
    files that only their own backend opens, beside the weights they came from."""
    return CACHE_NAME.search(Path(path).name) is not None


def writable_target(weights: Path, sha256: str, tag: str) -> Path:
    beside, cached = cache_candidates(weights, sha256, tag)
    return beside if os.access(beside.parent, os.W_OK) else cached


def read_metadata(path: Path) -> dict:
    """The ``napari_cellseg`` JSON entry of an exported model (empty when it has none)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _metadata_of(session)


def _metadata_of(session) -> dict:
    text = session.get_modelmeta().custom_metadata_map.get("napari_cellseg")
    return json.loads(text) if text else {}


def open_cached(weights: Path, sha256: str, tag: str, recipe: int):
    """(session, metadata) of an export of exactly these weights made by this ``recipe``; None if there
    is none. A file that does not match (other weights, older recipe, damaged) is ignored."""
    for path in cache_candidates(weights, sha256, tag):
        if not path.is_file():
            continue
        try:
            session = make_session(path)
            meta = _metadata_of(session)
        except Exception:  # noqa: BLE001 - a damaged cache file is re-exported
            continue
        if meta.get("source_sha256") == sha256 and meta.get("recipe") == recipe:
            return session, meta
    return None


def save_with_metadata(onnx_file: Path, target: Path, meta: dict) -> Path:
    """Copy an exported model to ``target`` (atomically) with ``meta`` as its ``napari_cellseg`` entry."""
    import onnx

    from .io import atomic_path

    model = onnx.load(str(onnx_file))
    del model.metadata_props[:]  # ultralytics' own entries are kept inside ``meta`` where needed
    entry = model.metadata_props.add()
    entry.key, entry.value = "napari_cellseg", json.dumps(meta)
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
    return target


def make_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # no busy-waiting between operators: on a CPU shared with other work (napari's own threads, other
    # processes) spinning threads slow everything down, and they gain little on two cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fallback_warning(what: str, exc: BaseException) -> str:
    note = f"{what}: ONNX Runtime not used ({type(exc).__name__}: {exc}); running on torch"
    warnings.warn(note, RuntimeWarning, stacklevel=3)
    return note
