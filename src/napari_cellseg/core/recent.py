"""The user's recently used model files, kept in a small JSON file."""
from __future__ import annotations

import json
import os
import weakref
from pathlib import Path

MAX_RECENT = 10
# bound methods told when the list changes (weak: a closed widget is forgotten)
_listeners: list[weakref.WeakMethod] = []


def on_change(method) -> None:
    _listeners.append(weakref.WeakMethod(method))


def _notify() -> None:
    for ref in list(_listeners):
        method = ref()
        if method is None:
            _listeners.remove(ref)
            continue
        try:
            method()
        except RuntimeError:  # e.g. the widget behind it was closed: forget it
            _listeners.remove(ref)


def config_dir() -> Path:
    """``$NAPARI_CELLSEG_CONFIG_DIR`` or the platform's user config folder."""
    override = os.environ.get("NAPARI_CELLSEG_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-cellseg"))


def _file() -> Path:
    return config_dir() / "recent_models.json"


def recent_models() -> list[str]:
    try:
        items = json.loads(_file().read_text())
    except (OSError, ValueError):
        return []
    return [p for p in items if isinstance(p, str) and Path(p).is_file()]


def remember_model(path: str | os.PathLike) -> list[str]:
    path = str(Path(path).resolve())
    items = [path] + [p for p in recent_models() if p != path]
    items = items[:MAX_RECENT]
    try:
        _file().parent.mkdir(parents=True, exist_ok=True)
        _file().write_text(json.dumps(items, indent=1))
    except OSError:
        pass  # a read-only home must not break segmentation
    _notify()
    return items
