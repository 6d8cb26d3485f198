"""How long napari's event loop stalls while napari-cellseg's widgets work, measured as a user runs them.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_event_loop.py \
        [--model nuclei] [--jobs segment,finetune,student] [--epochs 1] [--where]

A napari window is opened (shown, under Xvfb), the 520x696 sample ``dense_nuclei`` is opened with
``viewer.open_sample`` and each widget is opened with ``viewer.window.add_plugin_dock_widget``, the way
the Plugins menu does it. While a job runs, a QTimer probe ticks every 10 ms on the GUI thread and the
gaps between its ticks are recorded until the job's result is in the viewer: a gap of 10 ms means the
loop was free, a longer one is a stall (the user's clicks, paints and drags waited that long). Jobs:

* ``open segment + load model``: the Segment cells widget opens and loads its model in the background
  (it does so at once, so that a run finds the model ready); outside a run, shown for reference;
* ``segment (first run)``, ``segment (re-run)``: Run with the shipped default model on the sample;
* ``open fine-tune + imports``, ``open student + imports``: a training widget opens and imports torch
  (and ultralytics) in the background (outside a run, for reference);
* ``fine-tune``: Fine-tune a model from the sample image and its ground truth (``--epochs`` epochs);
* ``student``: Train U-Net student on the sample and its ground truth (``--epochs`` epochs of
  ``--student-steps`` steps);
* ``napari`` (the reference; run it alone, in a fresh process, as ``--jobs napari``): napari itself,
  no plugin code, adding a Labels layer of the sample's ground truth and then a Points layer of its
  centroids, each in an event-loop turn of its own, and painting them: the floor of what any plugin's
  first result costs the GUI thread here (the first paint of a new layer compiles its shaders).

``--where`` also samples the GUI thread's Python stack whenever a tick is more than 60 ms late, and
prints where the longest stalls were. Goal: the longest stall during a run < 100 ms.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PLUGIN = "napari-cellseg"
PROBE_MS = 10
GOAL_MS = 100


class StallProbe:
    """A 10 ms QTimer on the GUI thread; optionally a watchdog thread that records the GUI thread's stack
    when a tick is late."""

    def __init__(self, where: bool = False, late_ms: float = 60, depth: int = 3):
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.where, self.late_s, self.depth = where, late_ms / 1000, depth
        self.stacks: list[tuple[float, str]] = []  # (time, stack) of late moments
        self._stop = threading.Event()
        self._gui_thread = threading.get_ident()

    def _watch(self):
        while not self._stop.wait(0.005):
            if self.ticks and time.perf_counter() - self.ticks[-1] > self.late_s:
                frame = sys._current_frames().get(self._gui_thread)
                if frame is not None:
                    stack = "".join(traceback.format_stack(frame, limit=40))
                    self.stacks.append((self.ticks[-1], stack))

    def __enter__(self):
        self.ticks.clear()
        self.timer.start()
        if self.where:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timer.stop()
        self._stop.set()
        self.seconds = time.perf_counter() - self.started

    def gaps_ms(self) -> np.ndarray:
        return np.diff(self.ticks) * 1000 if len(self.ticks) > 1 else np.array([0.0])

    def figures(self) -> dict:
        gaps = self.gaps_ms()
        return {"wall_s": round(self.seconds, 1), "max_ms": round(float(gaps.max()), 1),
                "p95_ms": round(float(np.percentile(gaps, 95)), 1), "ticks": len(self.ticks),
                "over_goal": int((gaps > GOAL_MS).sum())}

    def worst_places(self, n: int = 6) -> list[tuple[float, str]]:
        """Where the GUI thread was in the ``n`` longest stalls: the innermost frames of each distinct
        sample taken in it (none: another thread held Python's interpreter lock all along)."""
        gaps = self.gaps_ms()
        out = []
        for i in np.argsort(gaps)[::-1][:n]:
            if gaps[i] <= self.late_s * 1000:
                break
            start = self.ticks[i]
            seen = []
            for t, stack in self.stacks:
                inner = "\n".join(stack.rstrip().splitlines()[-2 * self.depth:])
                if t == start and inner not in seen:
                    seen.append(inner)
            out.append((round(float(gaps[i]), 1), "\n  ...\n".join(seen[-3:]) or "(no sample: the GIL was held)"))
        return out


def run_event_loop_until(done, timeout_s: float, settle_s: float = 0.3) -> None:
    """Run Qt's own event loop (no busy polling that would compete with the worker for the 2 cores)
    until ``done()`` holds, then ``settle_s`` more: a stall at the very end shows as the gap before the
    next tick."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.perf_counter() + timeout_s
    state = {"end": None}

    def check():
        now = time.perf_counter()
        if state["end"] is None and (done() or now > deadline):
            state["end"] = now + settle_s
        if state["end"] is not None and now >= state["end"]:
            loop.quit()

    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(check)
    poll.start()
    loop.exec()
    poll.stop()


def idle(widget) -> bool:
    return widget.worker is None and getattr(widget, "_steps", None) is None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei", help="the model Segment cells runs (default: the shipped nuclei)")
    parser.add_argument("--jobs", default="segment,finetune,student")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of fine-tune and student")
    parser.add_argument("--student-steps", type=int, default=20, help="student training steps per epoch")
    parser.add_argument("--where", action="store_true", help="sample the GUI thread's stack in stalls > 60 ms")
    parser.add_argument("--depth", type=int, default=3, help="with --where: innermost frames shown per sample")
    parser.add_argument("--gc-log", action="store_true",
                        help="also list Python's full garbage collections (generation 2) longer than 50 ms")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per job at most")
    args = parser.parse_args(argv)
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]

    import os

    import napari
    from qtpy.QtWidgets import QApplication

    collections = []
    if args.gc_log:
        import gc

        started = {}

        def on_gc(phase, info):
            if info["generation"] != 2:
                return
            if phase == "start":
                started["t"] = time.perf_counter()
            elif "t" in started:
                ms = (time.perf_counter() - started.pop("t")) * 1000
                if ms > 50:
                    collections.append((time.perf_counter(), round(ms, 1), threading.current_thread().name))

        gc.callbacks.append(on_gc)
    load_at_start = os.getloadavg()[0]  # other processes' work on the same cores inflates every stall
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "dense_nuclei")
    image = next(layer for layer in viewer.layers if isinstance(layer, napari.layers.Image))
    truth = next(layer for layer in viewer.layers if isinstance(layer, napari.layers.Labels))
    app.processEvents()
    out_dir = Path(tempfile.mkdtemp(prefix="napari-cellseg-bench-"))
    rows, places = [], {}

    def measure(name, start, widget):
        with StallProbe(where=args.where, depth=args.depth) as probe:
            start()
            run_event_loop_until(lambda: idle(widget), args.timeout)
        figures = probe.figures()
        figures["status"] = widget.status.value if hasattr(widget, "status") else ""
        rows.append((name, figures))
        places[name] = probe.worst_places()
        print(f"  {name}: {figures}", file=sys.stderr, flush=True)

    if "segment" in jobs:
        holder = {}

        def open_segment():
            _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment cells")
            holder["w"] = widget
            widget.image.value = image
            widget.device.value = "cpu"
            widget.model.combo.value = args.model

        with StallProbe(where=args.where, depth=args.depth) as probe:
            open_segment()
            run_event_loop_until(lambda: holder["w"].preload_thread is None
                                 or not holder["w"].preload_thread.is_alive(), args.timeout)
        rows.append(("open segment + load model (no run)", {**probe.figures(), "status": "model loaded"}))
        places["open segment + load model (no run)"] = probe.worst_places()
        widget = holder["w"]
        measure("segment (first run)", widget.run, widget)
        measure("segment (re-run)", widget.run, widget)
        viewer.window.remove_dock_widget(widget.native.parentWidget())

    def open_training(name, title):
        holder = {}
        with StallProbe(where=args.where, depth=args.depth) as probe:
            holder["w"] = viewer.window.add_plugin_dock_widget(PLUGIN, title)[1]
            thread = getattr(holder["w"], "preimport_thread", None)
            run_event_loop_until(lambda: thread is None or not thread.is_alive(), args.timeout)
        rows.append((f"open {name} + imports (no run)", {**probe.figures(), "status": "imported"}))
        places[f"open {name} + imports (no run)"] = probe.worst_places()
        return holder["w"]

    if "finetune" in jobs:
        widget = open_training("fine-tune", "Fine-tune a model")
        widget.image.value, widget.labels_layer.value = image, truth
        widget.model.combo.value = args.model
        widget.epochs.value, widget.batch.value = args.epochs, 2
        widget.out.value = str(out_dir / "finetuned.pt")
        widget.device.value = "cpu"
        assert widget.run_button.enabled
        measure(f"fine-tune {args.model} ({args.epochs} epoch)", widget.run, widget)
        viewer.window.remove_dock_widget(widget.native.parentWidget())

    if "student" in jobs:
        from napari_cellseg.widgets.student import TRAIN

        widget = open_training("student", "Train U-Net student")
        widget.mode.value = TRAIN
        widget.image.value, widget.labels_layer.value = image, truth
        widget.epochs.value, widget.batch.value, widget.crop.value = args.epochs, 4, 256
        widget.extra_options = {"steps_per_epoch": args.student_steps}
        widget.out.value = str(out_dir / "student.pt")
        widget.device.value = "cpu"
        assert widget.run_button.enabled
        measure(f"student ({args.epochs} epoch x {args.student_steps} steps)", widget.run, widget)

    if "napari" in jobs:
        from qtpy.QtCore import QTimer
        from skimage.measure import regionprops

        centroids = np.array([r.centroid for r in regionprops(np.asarray(truth.data))])
        state = {"steps": 0}

        def add_labels():
            viewer.add_labels(np.asarray(truth.data).copy(), name="napari alone: labels")
            QTimer.singleShot(50, add_points)

        def add_points():
            viewer.add_points(centroids, name="napari alone: points", size=6)
            QTimer.singleShot(300, lambda: state.update(steps=1))

        class Reference:  # `measure` waits for `idle(widget)`, here: both layers added and painted
            worker = None
            status = argparse.Namespace(value="napari add_labels, then add_points")

            @property
            def _steps(self):
                return None if state["steps"] else True

        measure("napari alone: add_labels + add_points (reference)", add_labels, Reference())

    import os

    print(f"\nevent-loop stalls, probe every {PROBE_MS} ms (a gap of {PROBE_MS} ms = no stall), "
          f"image {image.data.shape[0]}x{image.data.shape[1]}, goal < {GOAL_MS} ms during a run; "
          f"{os.cpu_count()} CPU cores, load average at the end {os.getloadavg()[0]:.1f} "
          f"(at the start {load_at_start:.1f})\n")
    print(f"| job | wall time (s) | max stall (ms) | 95th percentile (ms) | gaps > {GOAL_MS} ms | goal < {GOAL_MS} ms |")
    print("|---|---|---|---|---|---|")
    for name, f in rows:
        verdict = "met" if f["max_ms"] < GOAL_MS else "**not met**"
        if name.startswith("open"):
            verdict += " (outside a run)"
        print(f"| {name} | {f['wall_s']} | {f['max_ms']} | {f['p95_ms']} | {f['over_goal']} | {verdict} |")
    for name, f in rows:
        print(f"\n{name}: {f['status']}")
    if args.gc_log:
        print(f"\nfull garbage collections > 50 ms: {[(ms, thread) for _, ms, thread in collections]}")
    if args.where:
        for name, worst in places.items():
            for gap, stack in worst:
                print(f"\n--- {name}: {gap} ms stall, GUI thread at:\n{stack}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
