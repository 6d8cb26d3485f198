"""Speed of the Mask R-CNN backend, measured in one run on random-weight ResNet-50-FPN checkpoints.

    python benchmarks/bench_maskrcnn.py [--repeats 3] [--size 520x704]

Prints seconds (median of ``repeats``) and ratios on one Sartorius-sized image:
1. an ensemble of two different models vs one model (goal: <= 2.1x; preprocessing is shared);
2. test-time augmentation (4 flips) vs one model;
3. plugin overhead: the whole ``segment`` call vs torchvision's own ``model(images)`` on the same
   converted weights and the same input (normalised, BGR, resized shortest edge 800).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    import torch

    from detectron2_style import detectron2_state, save_pth
    from synthetic import disc_image

    from napari_cellseg import load_model, segment
    from napari_cellseg.core.normalize import normalize_to_uint8

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="520x704")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    config = ("MODEL: {MASK_ON: true, PIXEL_STD: [57.0, 57.0, 57.0]}\n"
              "TEST: {DETECTIONS_PER_IMAGE: 100}\n")  # other settings: detectron2's defaults
    tmp = Path(tempfile.mkdtemp(prefix="bench-maskrcnn-"))
    paths = [save_pth(detectron2_state(1, seed=s), tmp / f"m{s}" / "model_final.pth", config) for s in (0, 1)]
    one = load_model(paths[0], device="cpu")
    ensemble = load_model(paths, device="cpu")
    image = disc_image((h, w), n=60, radius=(8, 16), seed=0, dtype=np.uint8)[0]
    kwargs = dict(conf=0.05)
    results = {"torch_threads": torch.get_num_threads(), "image": [h, w]}

    results["one_model_s"] = _median_seconds(lambda: segment(image, one, **kwargs), args.repeats)
    results["ensemble_of_2_s"] = _median_seconds(lambda: segment(image, ensemble, **kwargs), args.repeats)
    results["ensemble_ratio"] = results["ensemble_of_2_s"] / results["one_model_s"]
    results["tta_s"] = _median_seconds(lambda: segment(image, one, tta=True, **kwargs), args.repeats)
    results["tta_ratio"] = results["tta_s"] / results["one_model_s"]

    # raw torchvision on the same weights and input: its own transform resizes and normalises
    model = one.model
    model.roi_heads.score_thresh = 0.05
    model.transform.min_size, model.transform.max_size = (one.config.min_size_test,), one.config.max_size_test
    rgb = np.repeat(normalize_to_uint8(image)[..., None], 3, axis=-1)
    bgr01 = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1).float() / 255

    def raw():
        with torch.inference_mode():
            model([bgr01])

    results["raw_torchvision_s"] = _median_seconds(raw, args.repeats)
    results["plugin_overhead_ratio"] = results["one_model_s"] / results["raw_torchvision_s"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))
    print(f"ensemble of 2: {results['ensemble_ratio']:.2f}x one model (goal <= 2.1x); "
          f"TTA: {results['tta_ratio']:.2f}x; plugin vs raw torchvision: {results['plugin_overhead_ratio']:.2f}x")


if __name__ == "__main__":
    main()
