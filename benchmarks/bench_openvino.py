"""OpenVINO for the detector's network, against ONNX Runtime, in the default pipeline (a measurement, not an engine).

    pip install openvino
    python benchmarks/bench_openvino.py [--precision bf16|f32] [--rounds 4] [--validate] [--data ../shared/data/dsb2018]

The pipeline's YOLO network is the cached ONNX export ONNX Runtime runs (core.onnx_cache); OpenVINO compiles the
same file (``INFERENCE_PRECISION_HINT`` ``--precision``, 2 threads) and this script hands its outputs to the same
post-processing, swapping ``yolo.onnx_engine.OnnxYolo.run`` in this process only. The contour U-Net stays on ONNX
Runtime. Timing: the two in turn, ``--rounds`` times over the 13 520x696 fluorescence validation images (the model
loaded once, warmed up), per-image medians of wall and CPU seconds. ``--validate`` first scores all 76 validation
images through ``scripts/validate_nuclei_model.py``'s ``validate`` with OpenVINO (the goal: DSB >= 0.59, F1@0.5 on
fluorescence >= 0.90). bfloat16 needs a CPU with AVX512-BF16 or AMX (``OPTIMIZATION_CAPABILITIES`` lists BF16);
elsewhere OpenVINO computes in float32.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def use_openvino_for_yolo(precision: str) -> dict:
    """Patch OnnxYolo so that each instance also compiles its ONNX file with OpenVINO; returns the switch."""
    import openvino as ov

    from napari_cellseg.yolo import onnx_engine

    core = ov.Core()
    switch = {"openvino": False, "capabilities": core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")}
    onnx_init, onnx_run = onnx_engine.OnnxYolo.__init__, onnx_engine.OnnxYolo.run

    def init(self, session, n_classes):
        onnx_init(self, session, n_classes)
        self.openvino = core.compile_model(session._model_path, "CPU",
                                           {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 2})

    def run(self, padded):
        if not switch["openvino"]:
            return onnx_run(self, padded)
        x = np.ascontiguousarray(padded.transpose(0, 3, 1, 2), dtype=np.float32)
        x *= 1 / 255.0
        outputs = self.openvino([x])
        return outputs[0], outputs[1]

    onnx_engine.OnnxYolo.__init__, onnx_engine.OnnxYolo.run = init, run
    return switch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--validate", action="store_true", help="also score the 76 validation images with OpenVINO")
    args = parser.parse_args(argv)
    switch = use_openvino_for_yolo(args.precision)

    from bench_speed import timed_segment, validation_images

    from napari_cellseg import load_model, segment
    from napari_cellseg.core.io import read_image

    print(f"OpenVINO {args.precision}; CPU capabilities {switch['capabilities']}", flush=True)
    model = load_model("nuclei", device="cpu")
    if args.validate:
        from validate_nuclei_model import validate

        switch["openvino"] = True
        figures = validate(model, args.data, None, diameter="auto", refine="auto", bright_field="auto")
        print(f"76 validation images with OpenVINO: DSB {figures['dsb_score_all']:.4f}, F1@0.5 fluorescence "
              f"{figures['f1_50_fluorescence']:.4f}, count error {figures['mean_abs_relative_count_error']:.3f}",
              flush=True)
    images = [read_image(args.data / "images" / f"{i}.png") for i in validation_images(args.data)]
    for engine in (False, True):
        switch["openvino"] = engine
        segment(images[0], model)  # warm-up
    figures = {"ONNX Runtime float32": [], f"OpenVINO {args.precision}": []}
    for _ in range(args.rounds):
        for name, engine in zip(figures, (False, True)):
            switch["openvino"] = engine
            times = np.array([timed_segment(image, model)[2:] for image in images])  # (wall, CPU) per image
            figures[name].append((float(np.median(times[:, 0])), float(np.median(times[:, 1]))))
    print(f"\n{len(images)} images of 520x696, the whole default pipeline per image (the U-Net on ONNX Runtime in both)")
    print("| YOLO network on | wall s per round (median) | CPU s per round |")
    print("|---|---|---|")
    for name, rows in figures.items():
        print(f"| {name} | {' / '.join(f'{w:.3f}' for w, _ in rows)} | {' / '.join(f'{c:.3f}' for _, c in rows)} |")


if __name__ == "__main__":
    main()
