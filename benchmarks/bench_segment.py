"""Speed and responsiveness of napari-cellseg's YOLO path, measured in one run.

    python benchmarks/bench_segment.py [--model nuclei] [--repeats 3] [--no-gui]

Prints, with ratios against the raw library doing the same work:
1. plugin overhead: ``segment`` on single-tile images vs ultralytics ``predict`` on the same
   normalised tiles with the same settings (goal: <= 1.05x);
2. tiled full-resolution inference on a 2048x2048 image: seconds per megapixel;
3. the longest stall of the Qt event loop in a fresh session (measured first, before anything has
   imported torch): while the Segment widget opens and loads its model in the background, on a first
   run (napari creates the output layers; with ``--click-at-once`` the run starts before the model
   has loaded) and on a re-run (our layers updated in place) (goal: < 100 ms during a run), next to
   what napari alone costs to add a Labels and a Points layer; ``--fresh-sessions N`` repeats it in
   N fresh processes and prints min / median / max;
4. peak memory of a large image run above the loaded model.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _images(n: int, size: int):
    from synthetic import disc_image

    return [disc_image((size, size), n=40, radius=(5, 10), seed=s)[0] for s in range(n)]


def bench_overhead(model, repeats: int, size: int) -> dict:
    from napari_cellseg import segment
    from napari_cellseg.core.normalize import normalize_to_uint8

    import cv2

    images = _images(4, size)
    # the raw library gets the very input the plugin's backend hands it: normalised, at the model's zoom
    net = int(round(size * model.info.zoom))
    tiles = [cv2.resize(np.repeat(normalize_to_uint8(im)[..., None], 3, axis=-1), (net, net))[..., ::-1].copy()
             for im in images]
    from ultralytics import YOLO

    raw_model = YOLO(model.info.path)  # its own instance: the plugin's backend customises its predictor
    kwargs = dict(imgsz=[net, net], conf=0.25, iou=0.7, max_det=3000, device="cpu", retina_masks=True,
                  verbose=False)
    for tile in tiles[:1]:  # warm-up both paths
        raw_model.predict(tile, **kwargs)
        segment(images[0], model, tile=size, conf=0.25, refine=None)
    raw, plugin = [], []
    for _ in range(repeats):
        for image, tile in zip(images, tiles):
            t = time.perf_counter()
            result = raw_model.predict(tile, **kwargs)[0]
            if result.masks is not None:
                result.masks.data.cpu().numpy()  # the raw path also has to fetch the masks
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            segment(image, model, tile=size, conf=0.25, refine=None)
            plugin.append(time.perf_counter() - t)
    return {"tile": size, "network_input": net, "raw_ultralytics_s": float(np.median(raw)), "plugin_s": float(np.median(plugin)),
            "ratio": float(np.median(plugin) / np.median(raw))}


def bench_ensemble(model, size: int, repeats: int) -> dict:
    """Two copies of the model as an ensemble vs the model alone, same image (goal <= 2.1x)."""
    from napari_cellseg import segment
    from napari_cellseg.backends.ensemble import EnsembleBackend

    image = _images(1, size * 2)[0]
    ensemble = EnsembleBackend([model, model])
    # the same work for both: the model's training scale (an ensemble has no reference size to auto-scale to)
    segment(image, model, diameter=None, refine=None), segment(image, ensemble, refine=None)  # warm-up
    single, double = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        segment(image, model, diameter=None, refine=None)
        single.append(time.perf_counter() - t)
        t = time.perf_counter()
        segment(image, ensemble, refine=None)
        double.append(time.perf_counter() - t)
    return {"image": f"{size * 2}x{size * 2}", "single_s": float(np.median(single)),
            "ensemble_of_2_s": float(np.median(double)), "ratio": float(np.median(double) / np.median(single))}


def bench_large(model, side: int, refine: bool = False) -> dict:
    import psutil

    from napari_cellseg import segment
    from synthetic import disc_image

    image = np.tile(disc_image((512, 512), n=60, radius=(5, 10), seed=1)[0], (side // 512, side // 512))
    import threading

    process = psutil.Process()
    gc.collect()
    baseline = process.memory_info().rss
    peak = [baseline]
    running = threading.Event()
    running.set()

    def sample():  # poll RSS: allocations between progress yields count too
        while running.is_set():
            peak.append(process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    # one pass at the training scale: figures stay comparable; with ``refine`` the model's own contour refinement
    result = segment(image, model, diameter=None, refine="auto" if refine else None)
    seconds = time.perf_counter() - t
    running.clear()
    sampler.join()
    return {"image": f"{side}x{side} uint16", "refine": result.metadata["parameters"]["refine"] is not None,
            "objects": result.n_objects, "seconds": round(seconds, 2),
            "seconds_per_megapixel": round(seconds / (side * side / 1e6), 3),
            "peak_rss_above_start_mb": round((max(peak) - baseline) / 2**20, 1)}


def bench_event_loop(model_name: str, wait_for_preload: bool = True) -> dict:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_cellseg.widgets.segment import SegmentWidget

    viewer = napari.Viewer(show=False)
    viewer.add_image(_images(1, 1024)[0], name="cells")
    app = QApplication.instance()

    def stalls_while(action, busy) -> dict:
        """Longest gap between 5 ms timer ticks from ``action()`` until ``busy()`` is false (+0.2 s)."""
        ticks = []
        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start()
        started = time.perf_counter()
        action()
        end = None
        while end is None or time.perf_counter() < end:  # run on a little: a stall shows as the gap before the next tick
            app.processEvents()
            time.sleep(0.001)
            if end is None and not busy():
                end = time.perf_counter() + 0.2
        timer.stop()
        gaps = np.diff(ticks) * 1000 if len(ticks) > 1 else np.array([0.0])
        return {"max_stall_ms": round(float(gaps.max()), 1), "p99_stall_ms": round(float(np.percentile(gaps, 99)), 1),
                "seconds": round(time.perf_counter() - started - 0.2, 2)}

    widgets = []

    def open_widget():  # the model chosen in the widget starts loading in the background at once
        widget = SegmentWidget(viewer)
        widget.device.value = "cpu"
        if Path(model_name).is_file():
            widget.model.value = model_name
        else:
            widget.model.combo.value = model_name
        widgets.append(widget)

    figures = {}
    if wait_for_preload:
        figures["opening_widget_and_preloading"] = stalls_while(
            open_widget, lambda: widgets and widgets[0].preload_thread is not None and widgets[0].preload_thread.is_alive())
    else:  # the user clicks Segment at once: the run waits for the loading, whose stalls fall in the run
        open_widget()
    widget = widgets[0]

    def is_running():
        return widget.worker is not None

    # first run: napari creates the Labels and Points layers (their Qt controls and vispy
    # visuals); a re-run updates our own unedited layers in place
    figures["first_run"] = stalls_while(widget.run, is_running)
    figures["rerun"] = stalls_while(widget.run, is_running)
    figures["objects"] = widget.last_result.n_objects if widget.last_result else None
    viewer.close()
    return figures


def bench_layer_creation() -> dict:
    """What napari itself costs the GUI thread to add a Labels and a Points layer (no plugin code):
    the layer objects are built beforehand, as the plugin's worker does, and each is added in its own
    event-loop turn; the figure per layer bounds the first-run stall of any plugin that adds it."""
    import napari
    from napari.layers import Labels, Points
    from qtpy.QtWidgets import QApplication

    from synthetic import disc_image

    image, labels = disc_image((1024, 1024), n=40, radius=(5, 10), seed=0)
    viewer = napari.Viewer(show=False)
    viewer.add_image(image)
    QApplication.processEvents()
    timings = []
    for _ in range(2):
        new_labels = Labels(labels.astype(np.int32))
        new_points = Points(np.argwhere(labels > 0)[::500].astype(float), size=6)
        step = {}
        for name, layer in (("labels", new_labels), ("points", new_points)):
            t = time.perf_counter()
            viewer.layers.append(layer)
            QApplication.processEvents()
            step[name] = round((time.perf_counter() - t) * 1000, 1)
        timings.append(step)
    viewer.close()
    return {"napari_add_layer_ms": {"first": timings[0], "second": timings[1]}}


def event_loop_in_fresh_sessions(model_name: str, sessions: int, click_at_once: bool) -> dict:
    """The event-loop figures of ``sessions`` fresh processes (a first run happens once per session),
    as min / median / max: one process is a single sample of a noisy measure."""
    import subprocess

    samples = []
    for _ in range(sessions):
        command = [sys.executable, __file__, "--only", "event_loop", "--model", model_name, "--no-layer-creation"]
        done = subprocess.run(command + (["--click-at-once"] if click_at_once else []), capture_output=True,
                              text=True, check=True)
        samples.append(json.loads(done.stdout.strip().splitlines()[0]))
    def spread(phase, key):
        values = [sample[phase][key] for sample in samples]
        return [round(float(f(values)), 2) for f in (np.min, np.median, np.max)]

    summary = {phase: {key: spread(phase, key) for key in figures}
               for phase, figures in samples[0].items() if isinstance(figures, dict)}
    longest = {phase: [sample[phase]["max_stall_ms"] for sample in samples] for phase in summary}
    return {"sessions": sessions, "min_median_max": summary, "max_stall_ms_per_session": longest}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=4096, help="side of the large-image run (8192 for the goal)")
    parser.add_argument("--refine", action="store_true",
                        help="the large image with the model's contour refinement (the named 'nuclei': its student)")
    parser.add_argument("--no-gui", action="store_true")
    parser.add_argument("--click-at-once", action="store_true",
                        help="event loop: start the first run before the widget's model has loaded")
    parser.add_argument("--only", choices=["overhead", "ensemble", "large", "event_loop"], default=None)
    parser.add_argument("--fresh-sessions", type=int, default=1,
                        help="event loop: measure in this many fresh processes and print min/median/max")
    parser.add_argument("--no-layer-creation", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    wanted = {args.only} if args.only else {"overhead", "ensemble", "large", "event_loop"}
    figures = {}
    if "event_loop" in wanted and not args.no_gui:
        if args.fresh_sessions > 1:
            figures["event_loop"] = event_loop_in_fresh_sessions(args.model, args.fresh_sessions, args.click_at_once)
        else:  # first, as in a fresh napari session: torch and ultralytics are not imported yet
            figures["event_loop"] = bench_event_loop(args.model, wait_for_preload=not args.click_at_once)
        print(json.dumps(figures["event_loop"]), flush=True)
        if not args.no_layer_creation:
            figures["layer_creation"] = bench_layer_creation()
            print(json.dumps(figures["layer_creation"]), flush=True)
    if not wanted & {"overhead", "ensemble", "large"}:
        print(json.dumps(figures, indent=2))
        return

    import torch

    from napari_cellseg import load_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model(args.model, device="cpu")
    figures.update({"model": model.info.path, "torch_threads": torch.get_num_threads()})
    size = int(round(model.info.train_imgsz / model.info.zoom)) if model.info.train_imgsz else 512
    if "overhead" in wanted:
        figures["overhead"] = bench_overhead(model, args.repeats, size)
        print(json.dumps(figures["overhead"]), flush=True)
    if "ensemble" in wanted:
        figures["ensemble"] = bench_ensemble(model, size, args.repeats)
        print(json.dumps(figures["ensemble"]), flush=True)
    if "large" in wanted:
        figures["large_image"] = bench_large(model, args.large, args.refine)
        print(json.dumps(figures["large_image"]), flush=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
