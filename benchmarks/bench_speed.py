"""Speed of the shipped default pipeline against ultralytics' plain predict of the same weights.

    python benchmarks/bench_speed.py [--data ../shared/data/dsb2018] [--engines torch,onnx] [--cli] [--paired ROUNDS]

On the validation images of the model card's split (``scripts/train_nuclei_model.is_validation``) that
are 520x696 fluorescence images (13 in ../shared/data), each model loaded once and warmed up on the
first image, prints a table of per-image seconds (median over the images; wall clock and the process's
CPU seconds, which a machine shared with other work inflates less):

(a) the default pipeline, ``segment(image, load_model("nuclei"))``: the diameter-measuring pass, the
    real pass when the scale changes, the contour U-Net ``nuclei-contours``; once per inference engine
    (``NAPARI_CELLSEG_ENGINE``: torch, and ONNX Runtime where it is installed);
(b) each of its stages, timed inside those runs from the progress the pipeline reports (the time up to a
    progress event belongs to that event's stage: "measuring object size" is the first pass, "refining
    contours" the refiner, the other tile events the real pass);
(c) ultralytics' ``YOLO(weights).predict(image, imgsz=640, conf=<the model's>, max_det=1000,
    retina_masks=True)`` on the same normalised 8-bit image (and, with ``--ultralytics-onnx``, the same
    call on the plugin's cached ONNX export), with the ratio (a)/(c);
and the DSB score and F1@0.5 (mean over the images) of (a) and (c).

``--paired ROUNDS`` adds (a) on the default engine and (c) run on each image in turn, ROUNDS times over the
images, with the median of the pairs' wall ratios: on a machine whose speed drifts (a shared VM) the two
halves of a pair see the same machine.

``--cli`` adds whole-process timings of ``napari-cellseg --help`` and of one 256x256 validation image
segmented from a cold start (``python -m napari_cellseg.cli segment``, a new process each time, the
ONNX cache in place), each beside ``python -c "import ultralytics"``, run in turn.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

STAGES = ("first pass", "second pass", "refiner", "other")


def validation_images(data: Path, height: int = 520, width: int = 696, modality: str = "fluorescence",
                      limit: int | None = None):
    from train_nuclei_model import is_validation

    rows = [r for r in csv.DictReader(open(data / "metadata.csv"))
            if is_validation(r["id"]) and r["modality_guess"] == modality
            and int(r["height"]) == height and int(r["width"]) == width]
    return sorted(r["id"] for r in rows)[:limit]


def _stage_of(message: str) -> str:
    if message.startswith("measuring"):
        return "first pass"
    if message.startswith("refining"):
        return "refiner"
    return "second pass"


def timed_segment(image, model) -> tuple[object, dict, float, float]:
    """One pipeline run: its result, seconds per stage, wall and CPU seconds."""
    from napari_cellseg import segment_iter

    stages = dict.fromkeys(STAGES, 0.0)
    generator = segment_iter(image, model)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    last = wall0
    while True:
        try:
            progress = next(generator)
        except StopIteration as stop:
            result = stop.value
            break
        now = time.perf_counter()
        stages[_stage_of(progress.message or "")] += now - last
        last = now
    now = time.perf_counter()
    stages["other"] += now - last
    return result, stages, now - wall0, time.process_time() - cpu0


def bench_pipeline(engine: str, images, truths) -> dict:
    from napari_cellseg import load_model
    from napari_cellseg.core.metrics import evaluate

    os.environ["NAPARI_CELLSEG_ENGINE"] = engine  # the companion models read it when they load
    started = time.perf_counter()
    model = load_model("nuclei", device="cpu")
    timed_segment(images[0], model)  # warm-up: loads the refiner, first-call set-up
    load_seconds = time.perf_counter() - started
    rows = []
    for image, truth in zip(images, truths):
        result, stages, wall, cpu = timed_segment(image, model)
        scores = evaluate(result.labels, truth, with_coco=False)
        parameters = result.metadata["parameters"]
        rows.append({"wall": wall, "cpu": cpu, **stages, "dsb": scores["dsb_score"], "f1": scores["f1_50"],
                     "zoom": parameters.get("zoom"), "labels": result.labels})
    from napari_cellseg.pipeline.segment import companions_of

    refiner = companions_of(model).get("nuclei-contours")
    return {"name": f"default pipeline, engine {engine}", "rows": rows, "load_and_warm_up": load_seconds,
            "engines": {"yolo": getattr(model, "engine", "torch"), "unet": getattr(refiner, "engine", "torch")}}


def timed_predict(model, rgb: np.ndarray, conf: float) -> tuple[object, float, float]:
    """Ultralytics' own ``predict`` of one normalised RGB image (handed over as BGR, as OpenCV reads it), at the
    geometry the tables compare against: its result, wall and CPU seconds."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = model.predict(bgr, imgsz=640, conf=conf, max_det=1000, retina_masks=True, device="cpu",
                           verbose=False)[0]
    return result, time.perf_counter() - wall0, time.process_time() - cpu0


def bench_paired(weights: str, images, images_rgb, conf: float, rounds: int, threads: int | None = None) -> dict:
    """The pipeline (default engine) and ultralytics' predict on each image in turn, ``rounds`` times."""
    from ultralytics import YOLO

    from napari_cellseg import load_model

    os.environ.pop("NAPARI_CELLSEG_ENGINE", None)
    model = load_model("nuclei", device="cpu")
    reference = YOLO(weights, task="segment")
    timed_segment(images[0], model)
    timed_predict(reference, images_rgb[0], conf)
    reference_threads = _ultralytics_threads(threads)
    pairs = []
    for _ in range(rounds):
        rows = []
        for image, rgb in zip(images, images_rgb):
            _, _, wall, cpu = timed_segment(image, model)
            rows.append((wall, cpu, *timed_predict(reference, rgb, conf)[1:]))
        pairs.append(np.array(rows))

    def summary(rows):
        return {"pipeline_wall": float(np.median(rows[:, 0])), "pipeline_cpu": float(np.median(rows[:, 1])),
                "ultralytics_wall": float(np.median(rows[:, 2])), "ultralytics_cpu": float(np.median(rows[:, 3])),
                "ratio": float(np.median(rows[:, 0] / rows[:, 2]))}

    return {"rounds": [summary(rows) for rows in pairs], **summary(np.concatenate(pairs)),
            "ultralytics_torch_threads": reference_threads}


def labels_from_ultralytics(result, shape) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    if result.masks is None or len(result.boxes) == 0:
        return labels
    masks = result.masks.data.cpu().numpy() > 0.5
    order = np.argsort(result.boxes.conf.cpu().numpy())  # the best score painted last wins
    for k, i in enumerate(order, 1):
        labels[masks[i][: shape[0], : shape[1]]] = k
    return labels


def _ultralytics_threads(threads: int | None) -> int:
    """After ultralytics' first predict (its select_device sets torch's threads to CPU cores - 1, at most 8):
    ``threads`` if given; the count the predict calls then run with."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def bench_ultralytics(weights: str, images_rgb, truths, conf: float, label: str, threads: int | None = None) -> dict:
    from ultralytics import YOLO

    from napari_cellseg.core.metrics import evaluate

    model = YOLO(weights, task="segment")
    timed_predict(model, images_rgb[0], conf)  # warm-up
    label = f"{label}, torch threads {_ultralytics_threads(threads)}"
    rows = []
    for rgb, truth in zip(images_rgb, truths):
        result, wall, cpu = timed_predict(model, rgb, conf)
        scores = evaluate(labels_from_ultralytics(result, truth.shape), truth, with_coco=False)
        rows.append({"wall": wall, "cpu": cpu, "dsb": scores["dsb_score"], "f1": scores["f1_50"]})
    return {"name": label, "rows": rows}


def _median(rows, key):
    return float(np.median([r[key] for r in rows]))


def _mean(rows, key):
    return float(np.mean([r[key] for r in rows]))


def agreement(a_rows, b_rows) -> float:
    """Mean F1@0.5 of one run's labels against another's (1.0: the same instances)."""
    from napari_cellseg.core.metrics import evaluate

    return float(np.mean([evaluate(a["labels"], b["labels"], with_coco=False)["f1_50"]
                          for a, b in zip(a_rows, b_rows)]))


def whole_process(command: list[str], reference: list[str], runs: int) -> dict:
    """Wall and CPU seconds of fresh processes, ``command`` and ``reference`` in turn (median of ``runs``)."""
    figures = {"command": [], "reference": []}
    for _ in range(runs + 1):  # the first pair warms the file cache and is not counted
        for key, argv in (("command", command), ("reference", reference)):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall0 = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - wall0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            figures[key].append((wall, cpu))
    out = {}
    for key, values in figures.items():
        values = values[1:]
        out[key] = {"wall": float(np.median([v[0] for v in values])), "cpu": float(np.median([v[1] for v in values]))}
    out["ratio_wall"] = out["command"]["wall"] / out["reference"]["wall"]
    return out


def bench_cli(data: Path, runs: int) -> dict:
    from train_nuclei_model import is_validation

    small = sorted(r["id"] for r in csv.DictReader(open(data / "metadata.csv"))
                   if is_validation(r["id"]) and r["modality_guess"] == "fluorescence"
                   and int(r["height"]) == 256 and int(r["width"]) == 256)[0]
    python = sys.executable
    reference = [python, "-c", "import ultralytics"]
    out_dir = tempfile.mkdtemp(prefix="bench-speed-")
    segment = [python, "-m", "napari_cellseg.cli", "segment", str(data / "images" / f"{small}.png"),
               "--out", out_dir, "--overwrite", "-q"]
    subprocess.run(segment, check=True, stdout=subprocess.DEVNULL)  # makes the ONNX cache if missing
    return {"--help": whole_process([python, "-m", "napari_cellseg.cli", "--help"], reference, runs),
            "cold start, one 256x256 image": whole_process(segment, reference, runs)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018")
    parser.add_argument("--engines", default="torch,onnx", help="comma-separated: torch, onnx, auto")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images")
    parser.add_argument("--ultralytics-onnx", action="store_true",
                        help="also ultralytics' predict on the plugin's cached ONNX export of the weights")
    parser.add_argument("--cli", action="store_true", help="also whole-process CLI timings")
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--ultralytics-threads", type=int, default=None, metavar="N",
                        help="torch threads for ultralytics' predict, set after its warm-up (default: what its "
                             "select_device sets: CPU cores - 1, at most 8)")
    parser.add_argument("--paired", type=int, default=0, metavar="ROUNDS",
                        help="also ROUNDS rounds of the default engine's pipeline and ultralytics' predict on "
                             "each image in turn, the ratio taken pair by pair (robust to a machine whose "
                             "speed drifts)")
    args = parser.parse_args(argv)

    from napari_cellseg.backends import MODELS_DIR, NAMED_MODELS
    from napari_cellseg.core.io import read_image
    from napari_cellseg.core.normalize import model_rgb, to_stack_of_frames

    ids = validation_images(args.data, limit=args.limit)
    images = [read_image(args.data / "images" / f"{i}.png") for i in ids]
    truths = [read_image(args.data / "labels" / f"{i}.png") for i in ids]
    images_rgb = [model_rgb(np.asarray(to_stack_of_frames(im)[0])) for im in images]
    weights = MODELS_DIR / NAMED_MODELS["nuclei"]
    print(f"{len(ids)} validation images, 520x696 fluorescence; {os.cpu_count()} CPU cores; "
          f"torch threads {__import__('torch').get_num_threads()}", flush=True)

    runs = [bench_pipeline(engine.strip(), images, truths) for engine in args.engines.split(",") if engine.strip()]
    from napari_cellseg import load_model

    conf = load_model("nuclei", device="cpu").info.conf
    reference = bench_ultralytics(str(weights), images_rgb, truths, conf,
                                  f"ultralytics predict (torch), imgsz 640, conf {conf}", args.ultralytics_threads)
    others = [reference]
    if args.ultralytics_onnx:
        exported = sorted(weights.parent.glob(f"{weights.stem}.*.yolo.onnx"))
        if exported:
            others.append(bench_ultralytics(str(exported[-1]), images_rgb, truths, conf,
                                            "ultralytics predict (its ONNX Runtime backend, the same export)"))

    ref_wall, ref_cpu = _median(reference["rows"], "wall"), _median(reference["rows"], "cpu")
    print("\n| run | s/image (wall, median) | CPU s/image | x ultralytics (wall) | first pass | second pass "
          "| refiner | other | DSB | F1@0.5 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        rows = run["rows"]
        print(f"| {run['name']} (yolo: {run['engines']['yolo']}, unet: {run['engines']['unet']}) "
              f"| {_median(rows, 'wall'):.3f} | {_median(rows, 'cpu'):.3f} | {_median(rows, 'wall') / ref_wall:.2f} "
              + " ".join(f"| {_median(rows, s):.3f}" for s in STAGES)
              + f" | {_mean(rows, 'dsb'):.3f} | {_mean(rows, 'f1'):.3f} |")
    for run in others:
        rows = run["rows"]
        print(f"| {run['name']} | {_median(rows, 'wall'):.3f} | {_median(rows, 'cpu'):.3f} "
              f"| {_median(rows, 'wall') / ref_wall:.2f} | | | | | {_mean(rows, 'dsb'):.3f} | {_mean(rows, 'f1'):.3f} |")
    if len(runs) > 1:
        print(f"\ninstances of '{runs[1]['name']}' against '{runs[0]['name']}': mean F1@0.5 "
              f"{agreement(runs[1]['rows'], runs[0]['rows']):.4f}")
    figures = {"images": ids, "reference_wall": ref_wall, "reference_cpu": ref_cpu,
               "runs": [{**{k: v for k, v in r.items() if k != "rows"},
                         "rows": [{k: v for k, v in row.items() if k != "labels"} for row in r["rows"]]}
                        for r in runs + others]}
    if args.paired:
        figures["paired"] = paired = bench_paired(str(weights), images, images_rgb, conf, args.paired,
                                                  args.ultralytics_threads)
        print(f"\npaired, image by image, {args.paired} rounds over {len(images)} images (pipeline, then "
              f"ultralytics' predict with {paired['ultralytics_torch_threads']} torch threads, on each image in turn)")
        print("| round | pipeline s/image (wall, median) | CPU | ultralytics s/image (wall, median) | CPU "
              "| ratio (median of the pairs' wall ratios) |")
        print("|---|---|---|---|---|---|")
        for r, row in enumerate(paired["rounds"], 1):
            print(f"| {r} | {row['pipeline_wall']:.3f} | {row['pipeline_cpu']:.3f} | {row['ultralytics_wall']:.3f} "
                  f"| {row['ultralytics_cpu']:.3f} | {row['ratio']:.2f} |")
        print(f"| all | {paired['pipeline_wall']:.3f} | {paired['pipeline_cpu']:.3f} | {paired['ultralytics_wall']:.3f} "
              f"| {paired['ultralytics_cpu']:.3f} | {paired['ratio']:.2f} |")
    if args.cli:
        cli = bench_cli(args.data, args.cli_runs)
        figures["cli"] = cli
        print("\n| command (a new process each run) | wall s (median) | CPU s | `python -c \"import ultralytics\"` "
              "wall s | ratio |")
        print("|---|---|---|---|---|")
        for name, row in cli.items():
            print(f"| {name} | {row['command']['wall']:.2f} | {row['command']['cpu']:.2f} "
                  f"| {row['reference']['wall']:.2f} | {row['ratio_wall']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
