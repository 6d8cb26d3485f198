"""Reproduce the shipped nuclei model from ../shared/data/dsb2018 on the CPU.

    python scripts/train_nuclei_model.py --data ../shared/data/dsb2018 --work /tmp/nuclei --epochs 60

Split: an image is in validation when the first byte of sha1(image id) is
below 38 (about 15 %, fixed and independent of file order). Training images
are normalised exactly as the plugin does at inference, then cut into native
resolution crops; the network sees them up-scaled by ``--zoom`` (the same zoom
is stored in the checkpoint and used at inference, so small nuclei are seen
large enough by the network).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_cellseg.core.backend import DEFAULT_CONF  # noqa: E402
from napari_cellseg.core.datasets import write_yolo_dataset  # noqa: E402
from napari_cellseg.core.io import read_image  # noqa: E402
from napari_cellseg.core.normalize import bright_background, normalize_to_uint8, to_stack_of_frames  # noqa: E402
from napari_cellseg.core.tiling import tile_grid  # noqa: E402


def is_validation(image_id: str) -> bool:
    return hashlib.sha1(image_id.encode()).digest()[0] < 38


def model_input(image: np.ndarray) -> np.ndarray:
    frames, _ = to_stack_of_frames(image)
    rgb = normalize_to_uint8(frames)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return rgb


def light_background(image: np.ndarray) -> bool:
    """Whether a ``model_input`` image (normalised already) shows histology or bright-field."""
    return bright_background(image, [(0.0, 255.0)] * 3)


def samples(data: Path, crop: int, max_crops: int, rng: np.random.Generator, bright_field_only: bool = False):
    for image_path in sorted((data / "images").glob("*.png")):
        image_id = image_path.stem
        image = model_input(read_image(image_path))
        if bright_field_only and not light_background(image):
            continue
        labels = read_image(data / "labels" / f"{image_id}.png")
        tiles = tile_grid(*labels.shape, crop, 0)
        if not is_validation(image_id) and len(tiles) > max_crops:
            tiles = [tiles[i] for i in rng.choice(len(tiles), max_crops, replace=False)]
        for k, tile in enumerate(tiles):
            yield f"{image_id[:16]}_{k}", image[tile.slices], labels[tile.slices], is_validation(image_id)


def package_model(weights: Path, out: Path, zoom: float, notes: dict, mask_erosion: int = 1, conf: float = DEFAULT_CONF,
                  conf_tta: float | None = None, mask_threshold: float = 0.5,
                  object_diameter: float | None = None) -> str:
    """Strip the optimizer, record the zoom the model was trained at and its calibrated mask erosion,
    score threshold(s), mask threshold and reference object diameter; write atomically; returns sha256."""
    import torch
    from ultralytics.utils.torch_utils import strip_optimizer

    from napari_cellseg.core.io import atomic_path, sha256_of

    with atomic_path(out) as tmp:
        ckpt = torch.load(weights, map_location="cpu", weights_only=False)
        ckpt["napari_cellseg"] = {"zoom": zoom, "mask_erosion": mask_erosion, "conf": conf,
                                  "mask_threshold": mask_threshold, **notes}
        if conf_tta is not None:  # else TTA runs use conf
            ckpt["napari_cellseg"]["conf_tta"] = conf_tta
        if object_diameter is not None:  # else diameter="auto" keeps the training scale
            ckpt["napari_cellseg"]["object_diameter"] = object_diameter
        torch.save(ckpt, tmp)
        strip_optimizer(str(tmp))
    return sha256_of(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/nuclei-training"))
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--max-crops", type=int, default=3)
    parser.add_argument("--bright-field-only", action="store_true",
                        help="only images with a light background (histology, bright-field): the nuclei-brightfield "
                             "specialist")
    parser.add_argument("--zoom", type=float, default=1.5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--time", type=float, default=None, help="hours; stops training early")
    parser.add_argument("--model", default="yolo11n-seg.yaml", help="architecture YAML, or weights to continue from")
    parser.add_argument("--optimizer", default="auto")
    parser.add_argument("--lr0", type=float, default=0.01)
    parser.add_argument("--warmup-epochs", type=float, default=3.0)
    parser.add_argument("--name", default="run")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--package-only", type=Path, default=None, help="only package these weights")
    parser.add_argument("--mask-erosion", type=int, default=1,
                        help="pixels to peel off predicted masks (calibrated on training images)")
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF,
                        help="default score threshold (calibrated on training images: calibrate_nuclei_model.py)")
    parser.add_argument("--mask-threshold", type=float, default=0.5,
                        help="mask probability a pixel needs (calibrate_nuclei_model.py --mask-thresholds)")
    parser.add_argument("--conf-tta", type=float, default=None,
                        help="the same for test-time augmented runs, where it differs "
                             "(calibrate_nuclei_model.py --tta)")
    parser.add_argument("--object-diameter", type=float, default=None,
                        help="object diameter in network pixels the model segments best; diameter='auto' "
                             "scales images to it (calibrate_nuclei_model.py --diameters)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                        / "src/napari_cellseg/models/nuclei_yolo11n_seg.pt")
    args = parser.parse_args(argv)
    notes = {"training_data": "DSB2018 stage1_train (BBBC038, corrected), CC0", "crop": args.crop,
             "split": "validation: sha1(image id)[0] < 38"}
    if args.bright_field_only:
        notes["images"] = "light background only (histology, bright-field): the bright-field specialist"
    if args.package_only:
        print("sha256:", package_model(args.package_only, args.out, args.zoom, notes, args.mask_erosion, args.conf,
                                       args.conf_tta, args.mask_threshold, args.object_diameter))
        return

    data_yaml = args.work / "dataset" / "data.yaml"
    if data_yaml.is_file():  # continuing: same crops, same split
        train(args, data_yaml, notes)
        return
    rng = np.random.default_rng(0)
    val_names = []
    rows = []
    for name, image, labels, val in samples(args.data, args.crop, args.max_crops, rng, args.bright_field_only):
        rows.append((name, image, labels))
        if val:
            val_names.append(name)
    data_yaml = write_yolo_dataset(rows, args.work / "dataset", val_names=val_names, class_names=["nucleus"])
    print(f"{len(rows)} crops, {len(val_names)} for validation -> {data_yaml}", flush=True)
    train(args, data_yaml, notes)


def train(args, data_yaml: Path, notes: dict) -> None:
    from ultralytics import YOLO

    imgsz = int(round(args.crop * args.zoom / 32) * 32)
    model = YOLO(args.model)
    model.train(
        data=str(data_yaml), imgsz=imgsz, epochs=args.epochs, time=args.time, batch=args.batch,
        device="cpu", workers=2, plots=False, project=str(args.work), name=args.name, exist_ok=True,
        pretrained=str(args.model).endswith(".pt"), optimizer=args.optimizer, lr0=args.lr0, warmup_epochs=args.warmup_epochs, amp=False,
        patience=1000, close_mosaic=5, degrees=90, flipud=0.5, fliplr=0.5,
        scale=0.3, hsv_h=0.0, hsv_s=0.3, hsv_v=0.3, max_det=1000, overlap_mask=True,
    )
    best = args.work / args.name / "weights" / "best.pt"
    sha256 = package_model(best, args.out, args.zoom, notes, args.mask_erosion, args.conf, args.conf_tta,
                           args.mask_threshold, args.object_diameter)
    print("best weights:", best, "sha256 of the packaged model:", sha256)


if __name__ == "__main__":
    main()
