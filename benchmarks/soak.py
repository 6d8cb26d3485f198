"""Soak: N segment/cancel cycles in a viewer; prints the memory growth in MB (goal: < 50 for 100).

    python benchmarks/soak.py [--cycles 100] [--model otsu-watershed]

Odd cycles are cancelled midway, even ones run to the end and replace their own layers.
Runs in its own process so the measurement holds only the viewer and the plugin.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--model", default="otsu-watershed")
    args = parser.parse_args(argv)

    import napari
    import psutil
    from qtpy.QtCore import QThreadPool
    from qtpy.QtWidgets import QApplication

    from napari_cellseg.widgets.segment import SegmentWidget
    from synthetic import disc_image

    viewer = napari.Viewer(show=False)
    viewer.add_image(disc_image((512, 512), n=40, seed=9)[0], name="cells")
    widget = SegmentWidget(viewer)
    if Path(args.model).is_file():
        widget.model.value = args.model
    else:
        widget.model.combo.value = args.model
    widget.device.value = "cpu"
    widget.settings["tile"].value = 128
    app = QApplication.instance()
    process = psutil.Process()
    cancelled = 0

    def cycle(i):
        nonlocal cancelled
        widget.run()
        if i % 2:
            widget.cancel()
        while widget.worker is not None:
            app.processEvents()
            time.sleep(0.002)
        cancelled += widget.status.value.startswith("cancelled")

    for i in range(10):  # warm-up
        cycle(i)
    gc.collect()
    before = process.memory_info().rss
    cancelled = 0
    for i in range(args.cycles):
        cycle(i)
    gc.collect()
    own = [layer for layer in viewer.layers if "napari_cellseg" in layer.metadata]
    print(json.dumps({
        "cycles": args.cycles, "cancelled": cancelled, "output_layers": len(own),
        "memory_growth_mb": round((process.memory_info().rss - before) / 2**20, 1),
    }), flush=True)
    # an orderly end: no thread still running and the viewer's Qt objects deleted while the
    # QApplication exists (once, under CI load, the process crashed in teardown after printing)
    if widget.preload_thread is not None:
        widget.preload_thread.join()
    viewer.close()
    QThreadPool.globalInstance().waitForDone()
    app.processEvents()


if __name__ == "__main__":
    main()
