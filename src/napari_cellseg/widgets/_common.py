"""Pieces shared by the widgets: model choice, cached loading, worker wiring."""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from magicgui import widgets
from psygnal import Signal

from ..backends import available_models
from ..core.backend import DEVICES
from ..core.heap import release_frozen, settle_heap
from ..core.recent import on_change, recent_models, remember_model


class ModelChooser(widgets.Container):
    """A combo box of shipped and recent models plus a file chooser that adds to it."""

    def __init__(self, label: str = "model", **kwargs):
        # a callable: the viewer's reset_choices (on every layer change) re-reads the list
        self.combo = widgets.ComboBox(label=label, choices=lambda _widget: self._choices(),
                                      tooltip="a shipped model, a built-in method, or a checkpoint used recently")
        self.file = widgets.FileEdit(label="model file", mode="r", filter="*.pt *.pth *.pkl *.onnx",
                                     tooltip="your own checkpoint: YOLO (.pt), detectron2 Mask R-CNN (.pth/.pkl), "
                                             "a U-Net student (.pt) or a YOLO detection export (.onnx); it is added "
                                             "to the list above")
        super().__init__(widgets=[self.combo, self.file], labels=True, **kwargs)
        self.file.changed.connect(self._on_file)
        on_change(self._refresh)  # e.g. a model fine-tuned in another widget

    def _refresh(self):
        self.combo.reset_choices()  # magicgui keeps the current value when it is still offered

    @staticmethod
    def _choices() -> list[str]:
        return available_models() + recent_models()

    def _on_file(self, value):
        path = Path(value)
        if not path.is_file():
            return
        remember_model(path)
        self.combo.value = str(path.resolve())

    @property
    def value(self) -> str | None:
        return self.combo.value

    @value.setter
    def value(self, path) -> None:
        self._on_file(path)


class ModelCache:
    """Models loaded in worker threads, kept for re-runs (per widget, not global).

    Thread-safe: a run that asks for a model while ``preload`` is still loading it waits for
    that load instead of starting a second one; a preload that a newer one has superseded (the user
    changed the model or device again) loads nothing, so it cannot evict the newer choice.
    """

    def __init__(self):
        import threading

        self._models: dict = {}
        self._lock = threading.Lock()
        self._latest_preload = 0

    def get(self, model: str, device: str):
        return self._get(model, device)[0]

    def _get(self, model, device: str, warm_up: bool = False, preload: int | None = None):
        """(the loaded model, whether it was loaded just now); ``warm_up``: a newly loaded model
        also makes one tiny inference; ``preload``: the preload asking, which gets (None, False)
        once a newer preload was requested."""
        from ..backends import load_model
        from ..core.backend import resolve_device
        from ..pipeline.segment import warm_up as warm_up_model

        device = resolve_device(device)  # 'auto' and the device it picks share one entry
        names = tuple(model) if isinstance(model, (list, tuple)) else (model,)  # a list: an ensemble
        stamps = []
        for name in names:
            try:
                stamps.append(os.stat(name).st_mtime_ns)
            except OSError:
                stamps.append(None)  # a shipped name or a built-in
        key = (names, device, tuple(stamps))
        with self._lock:
            if preload is not None and preload != self._latest_preload:
                return None, False
            if key not in self._models:
                if self._models:
                    release_frozen()  # the model dropped here may be frozen: let its cycles be freed
                self._models.clear()  # one model resident at a time keeps memory bounded
                loaded = load_model(list(names) if len(names) > 1 else names[0], device=device)
                if warm_up:  # under the lock: no run uses the model before its warm-up is over
                    try:
                        warm_up_model(loaded)
                    except Exception:  # noqa: BLE001 - only a head start: a run reports real problems
                        pass
                self._models[key] = loaded
                return loaded, True
            return self._models[key], False

    def preload(self, model: str | None, device: str):
        """Load ``model`` in a background thread, so that a later run finds it ready.

        The first model of a session imports torch and its backend's libraries, its first
        inference sets up more (e.g. ultralytics' predictor), and Python's full garbage
        collections over a heap that size hold the interpreter lock for a few hundred ms each:
        done here, as soon as a model is chosen, with one tiny inference and one collection at
        the end, those stalls fall outside the runs. Errors are left for the run to report.
        Returns the thread (None without a model).
        """
        import threading

        self._latest_preload += 1
        ticket = self._latest_preload

        def load():
            try:
                _, loaded_now = self._get(model, device, warm_up=True, preload=ticket)
            except Exception:  # noqa: BLE001 - the run reports the same error with context
                return
            if loaded_now:
                # the collection the imports have made due, now rather than during a run; then what is
                # alive (modules, the model) is frozen out of later ones (see core.heap)
                settle_heap()

        if not model:
            return None
        thread = threading.Thread(target=load, name="napari-cellseg-preload", daemon=True)
        thread.start()
        return thread


def preimport(modules: tuple[str, ...]):
    """Import ``modules`` (e.g. torch and ultralytics for a training widget) in a background thread, then
    settle the heap (see ``core.heap``): a first import holds Python's interpreter lock in long stretches
    (the dynamic loader mapping torch's libraries, the full collections its allocations set off), which
    then happen while the user sets the widget up rather than during the first run. Returns the thread."""
    import importlib
    import sys
    import threading

    def load():
        try:
            for name in modules:
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - only a head start: the run reports a missing library
            return
        settle_heap()

    if all(name in sys.modules for name in modules):
        return None
    thread = threading.Thread(target=load, name="napari-cellseg-preimport", daemon=True)
    thread.start()
    return thread


def full_resolution(layer):
    """The layer's pixels at full resolution (level 0 of a multiscale pyramid), still lazy if lazy."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def layer_file(layer, viewer=None) -> Path | None:
    """The file (or folder) a layer was opened from: its own ``source.path``, else, for one of our
    output layers, that of the image it was made from (found in ``viewer``); None when neither."""
    if layer is None:
        return None
    path = getattr(getattr(layer, "source", None), "path", None)
    if path:
        return Path(path)
    source_id = (getattr(layer, "metadata", None) or {}).get("napari_cellseg", {}).get("source_layer_id")
    if viewer is not None and source_id is not None:
        for other in viewer.layers:
            if other is not layer and other.unique_id == source_id:
                return layer_file(other, viewer)
    return None


def output_folder(path: Path | None) -> Path:
    """Where outputs go by default: the folder of ``path`` (``path`` itself for a folder), else the
    current working directory (never the home folder's root)."""
    if path is None:
        return Path.cwd()
    return path if path.is_dir() else path.parent


def output_stem(layer, path: Path | None) -> str:
    """A file-name stem for outputs of ``layer``: the stem of its file (a folder's name), else its name."""
    if path is not None:
        stem = path.name if path.is_dir() else path.name.split(".")[0]
        if stem:
            return stem
    name = getattr(layer, "name", "") or "napari-cellseg"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip()) or "napari-cellseg"


class OutputDefault:
    """Keeps a save-path control (a FileEdit) at a default beside the chosen input: ``<folder>/<stem><suffix>``
    for a file (``suffix`` e.g. ``"_student.pt"``), or the folder itself (``suffix=None``, a folder control).
    ``locate()`` gives (layer or None, its file or folder or None). Follows the input when it changes,
    until the user chooses a path of their own."""

    def __init__(self, control: widgets.FileEdit, locate, suffix: str | None, triggers=()):
        self.control, self.locate, self.suffix = control, locate, suffix
        self._auto: str | None = None
        for trigger in triggers:
            trigger.changed.connect(self.update)
        self.update()

    def default(self) -> Path:
        layer, path = self.locate()
        folder = output_folder(path)
        return folder if self.suffix is None else folder / f"{output_stem(layer, path)}{self.suffix}"

    def user_chose(self) -> bool:
        current = str(self.control.value or "")
        return current not in ("", ".") and self._auto is not None and current != self._auto

    def update(self, *_) -> None:
        if self.user_chose():
            return
        self.control.value = str(self.default())
        self._auto = str(self.control.value)


def wrapping(label: widgets.Label) -> widgets.Label:
    """A label whose long text wraps at the dock's width: it neither widens the dock nor, by asking for
    its narrow word-wrapped height, makes the dock (and napari's window) taller than the screen."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setMinimumWidth(50)
    # the label's own (narrow) width hint is ignored: it takes the dock's width, and its height follows
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


def device_choice() -> widgets.ComboBox:
    return widgets.ComboBox(label="device", choices=list(DEVICES), value="auto",
                            tooltip="where the model runs: auto picks a GPU (CUDA or Apple MPS) when there is one, "
                                    "else the CPU")


def notify_error(exc: BaseException) -> None:
    from napari.utils.notifications import show_error

    show_error(f"napari-cellseg: {exc}")


def reporting_errors(action, status: widgets.Label):
    """A button callback that turns a ValueError (bad input) into a status line and a notification."""
    def run(*_):
        try:
            action()
        except ValueError as exc:
            status.value = str(exc)
            notify_error(exc)
    return run


@contextmanager
def quiet_private_access():
    """napari warns (and shows a notification) when a plugin touches its private attributes. The GUI
    steps that add our layers do so on purpose, each guarded (see ``_layers``), so a user is spared a
    "Private attribute access" toast on every run; other warnings still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Private attribute access", category=FutureWarning)
        yield


GUI_STEP_GAP_MS = 2  # between two GUI steps of a result: the event loop's other work runs there


def _delegate(generator):
    return (yield from generator)


class WorkerWidget(widgets.Container):
    """A dock widget that runs one compute generator at a time with progress and cancel."""

    # a run's result is in the viewer: emitted after its last GUI step (not on error or cancel)
    result_shown = Signal()

    def __init__(self, viewer, controls: list, run_text: str):
        self._viewer = viewer
        self.worker = None
        self.run_button = widgets.PushButton(text=run_text, tooltip=f"{run_text.lower()}: runs in the background; "
                                             "enabled once the inputs above are chosen")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False,
                                                tooltip="stop the run at its next step; nothing is added")
        self.progress = widgets.ProgressBar(label="progress", value=0, min=0, max=1, tooltip="progress of the run")
        self.status = wrapping(widgets.Label(value="", tooltip="what the last run did"))
        super().__init__(widgets=[*controls, self.run_button, self.cancel_button, self.progress, self.status])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        # layer pickers follow the viewer's layers, and the run button follows what is chosen
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)
            event.connect(self.refresh_run_button)

    def inputs_ready(self) -> bool:
        """Whether the run button may be pressed (subclasses check their required inputs)."""
        return True

    def refresh_run_button(self, *_) -> None:
        self.run_button.enabled = self.worker is None and self.inputs_ready()

    def run(self):  # subclasses validate their inputs and call _start
        raise NotImplementedError

    def _start(self, job, *args, on_done, **kwargs) -> None:
        from napari.qt.threading import create_worker
        from qtpy.QtCore import Qt

        if self.worker is not None:
            return  # one run at a time
        generator = job(*args, **kwargs)
        # errors are reported through our handler; nothing is re-raised in the event loop
        self.worker = create_worker(_delegate, generator, _ignore_errors=True)
        # on Cancel the worker just stops iterating; closing the generator right there, in the
        # worker thread, runs its clean-up at once (a training thread stops, best weights are kept)
        self.worker.aborted.connect(generator.close, Qt.ConnectionType.DirectConnection)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_returned)
        self.worker.returned.connect(lambda value: self._show_result(on_done, value))
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress.value = 0
        self.status.value = "running"
        self.worker.start()

    def cancel(self):
        if self.worker is not None:
            self.worker.quit()  # takes effect at the next yield: within one tile

    def _on_progress(self, progress):
        self.progress.max = max(1, progress.total)
        self.progress.value = progress.done
        self.status.value = progress.message

    def _on_returned(self, _result):
        self.progress.value = self.progress.max

    _steps = None  # GUI work still to do for the last result
    _finish_after_steps = False

    def _show_result(self, on_done, value) -> None:
        with quiet_private_access():  # a plain function's GUI work happens right here
            steps = on_done(value)
        self._gui_steps(steps)

    def _gui_steps(self, steps) -> None:
        """Run ``on_done``'s GUI work. A generator does one step per event-loop turn (it yields
        between steps), so that several slow napari calls never block the loop together; the run
        counts as finished only after its last step."""
        if not hasattr(steps, "__next__"):
            self.result_shown.emit()
            return
        self._steps = steps
        self._next_gui_step()

    def _next_gui_step(self) -> None:
        from qtpy.QtCore import QTimer

        try:
            with quiet_private_access():
                next(self._steps)
        except StopIteration:
            self._steps = None
            self.result_shown.emit()
        except Exception as exc:  # a failed step must not leave the widget stuck in "running"
            self._steps = None
            self._on_error(exc)
        if self._steps is not None:
            # not 0: a zero-delay call can run before timers and paint events that fell due during
            # this step, which fuses two steps into one stall of the event loop
            QTimer.singleShot(GUI_STEP_GAP_MS, self._next_gui_step)
        elif self._finish_after_steps:
            self._finish_after_steps = False
            self._on_finished()

    def _on_error(self, exc):
        self.status.value = f"failed: {exc}"
        notify_error(exc)

    def _on_aborted(self):
        self.status.value = "cancelled: nothing was added"

    def _on_finished(self):
        if self._steps is not None:  # the result's layers are still being added
            self._finish_after_steps = True
            return
        self.worker = None
        self.cancel_button.enabled = False
        self.refresh_run_button()


class TrainingWidget(WorkerWidget):
    """A WorkerWidget whose job writes a model to ``self._out_path``: the model is offered by every
    Segment cells widget once written, and a cancelled run keeps the best weights so far."""

    _out_path: Path | None = None

    def _register(self, path: Path | None) -> None:
        from ..core.recent import remember_model

        if path is not None and path.is_file():
            remember_model(path)  # offered at once by every Segment cells widget
            self.status.value = f"saved {path.name}; listed in Segment cells"

    def _on_done(self, result):
        self.last_result = result
        self._register(result.path)
        calibration = getattr(result, "calibration", None)
        if calibration and result.path is not None:
            self.status.value += f"; score threshold {calibration['conf']} (calibrated on the validation images)"
            calibration_tta = getattr(result, "calibration_tta", None)
            if calibration_tta:
                self.status.value += f", {calibration_tta['conf']} with test-time augmentation"

    def _on_aborted(self):
        super()._on_aborted()
        self._register(self._out_path)
        if self._out_path is not None and self._out_path.is_file():
            self.status.value = f"cancelled; best weights so far kept in {self._out_path.name}"
