"""``napari-cellseg demo``: a sample image segmented and scored, in napari or headless."""
from __future__ import annotations

import os
import sys


def add_parser(sub):
    demo = sub.add_parser("demo", help="open napari on a sample image, segment it and score it")
    demo.add_argument("--sample", default="dense", choices=["dense", "small", "large"])
    demo.add_argument("--model", default="nuclei", help="model name or path (default: the shipped nuclei model)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--headless", action="store_true", help="no window: print counts and metrics")
    demo.add_argument("--out", default=None, help="(headless) also write the outputs here")
    demo.add_argument("--screenshot", default=None, metavar="PATH",
                      help="(in a window) save a picture of the whole window after the run, then exit")
    return demo


def run(args) -> int:
    """Segment a sample image with the default model and score it against its ground truth."""
    from .._sample_data import SAMPLES, load_sample

    if args.headless or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"):
        from .._demo import demo_summary
        from ..core.metrics import evaluate
        from ..pipeline.segment import segment

        image, truth = load_sample(args.sample)
        result = segment(image, args.model, device=args.device)
        row = evaluate(result.labels, truth)
        print(demo_summary(SAMPLES[args.sample], args.model, result.n_objects, result.metadata["seconds"], row))
        if args.out:
            result.save(args.out, SAMPLES[args.sample])
        return 0
    from .._demo import run_demo

    run_demo(args.sample, args.model, args.device, screenshot=args.screenshot)
    return 0
