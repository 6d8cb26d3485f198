"""CPU speed of the U-Net student against its teachers, on the same image, in one run.

    python benchmarks/bench_student.py [--student nuclei-student] [--repeats 2] [--size 1024]

Seconds of the plugin's ``segment`` on one 1024x1024 image (the shipped dense DSB2018
fluorescence sample, tiled up to that size) for:
the U-Net student; the shipped nano YOLO (YOLO11n-seg, ``nuclei``); a random-weight YOLO11x-seg
built from ``yolo11x-seg.yaml`` run with the nano model's tiling (imgsz 384 on 256-pixel tiles),
i.e. a large teacher in the same role; and the raw forward pass of a random-weight torchvision
``maskrcnn_resnet50_fpn`` on the whole image (no tiling, no post-processing: a lower bound).
Prints the ratios (goal: the student >= 3x faster than the large teacher). Random weights change
the number of detections, not the network's cost, which dominates.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def test_image(size: int) -> tuple[np.ndarray, str]:
    """The package's dense DSB2018 fluorescence sample, tiled up to size x size."""
    from napari_cellseg.core.io import read_image

    sample = ROOT / "src" / "napari_cellseg" / "sample_data" / "dsb2018_fluorescence_dense.png"
    image = np.asarray(read_image(sample))
    image = image[..., 0] if image.ndim == 3 else image
    reps = (-(-size // image.shape[0]), -(-size // image.shape[1]))
    return np.tile(image, reps)[:size, :size], f"{sample.name} ({image.shape[1]}x{image.shape[0]}) tiled to {size}x{size}"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def yolo11x_checkpoint(folder: Path) -> Path:
    from ultralytics import YOLO

    path = folder / "yolo11x_seg_random.pt"
    YOLO("yolo11x-seg.yaml").save(str(path))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="nuclei-student")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--no-maskrcnn", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from napari_cellseg import load_model, segment

    image, what = test_image(args.size)
    figures = {"image": what, "torch_threads": torch.get_num_threads()}
    student = load_model(args.student, device="cpu")
    nano = load_model("nuclei", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        large = load_model(yolo11x_checkpoint(Path(tmp)), device="cpu")
    seconds = {
        "student_unet": timed(lambda: segment(image, student), args.repeats),
        # one pass at the nano model's training scale ("auto" may add a second at another scale)
        "yolo11n_seg_nuclei": timed(lambda: segment(image, nano, diameter=None, refine=None), args.repeats),
        "yolo11x_seg_random": timed(lambda: segment(image, large, imgsz=384, tile=256, zoom=1.5), args.repeats),
    }
    if not args.no_maskrcnn:
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        maskrcnn = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=args.size,
                                         max_size=args.size).eval()
        x = torch.from_numpy(np.repeat((image / image.max()).astype(np.float32)[None], 3, axis=0))

        def forward():
            with torch.inference_mode():
                maskrcnn([x])

        seconds["maskrcnn_r50_fpn_random_forward_only"] = timed(forward, args.repeats)
    figures["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    base = seconds["student_unet"]
    figures["speedup_of_student"] = {k: round(v / base, 2) for k, v in seconds.items() if k != "student_unet"}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
