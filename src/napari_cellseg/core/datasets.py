"""Training sets from images and instance labels, and back: ultralytics YOLO and COCO.

YOLO stores one polygon per object (normalised x, y); COCO stores exact
run-length encoded masks (pycocotools). Both are read back into label images.
Polygon coordinates are in pixel-edge units (a pixel i spans [i, i+1)).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .io import write_image


def label_polygons(labels: np.ndarray, min_area: int = 3) -> list[tuple[int, np.ndarray]]:
    """One outline polygon per instance, as (label, (N, 2) array of x, y pixel coordinates).

    The outline follows the pixel edges: contours of the mask up-sampled 2x lie on
    the original pixel boundaries (corners cut by a quarter pixel), so rasterising
    the polygon gives back the object. Objects in several pieces keep their
    largest piece (YOLO stores one polygon per object).
    """
    from skimage.measure import find_contours, regionprops

    polygons = []
    for region in regionprops(np.asarray(labels)):
        if region.area < min_area:
            continue
        y0, x0, _, _ = region.bbox
        fine = np.kron(np.pad(region.image, 1), np.ones((2, 2))).astype(np.float32)
        contours = find_contours(fine, 0.5)
        if not contours:
            continue
        contour = max(contours, key=len)
        # fine-grid centre j -> original pixel-centre coordinate (j - 0.5) / 2; then pixel-edge units (+0.5)
        yx = (contour - 0.5) / 2 - 1 + np.array([y0, x0]) + 0.5
        yx = _simplify(yx)
        polygons.append((int(region.label), yx[:, ::-1].astype(np.float32)))
    return polygons


def _simplify(yx: np.ndarray) -> np.ndarray:
    """Drop collinear points (straight runs along pixel edges) without moving the outline."""
    from skimage.measure import approximate_polygon

    return approximate_polygon(yx, tolerance=0.01)


def yolo_label_lines(labels: np.ndarray, class_of: dict[int, int] | None = None) -> list[str]:
    """Lines of an ultralytics segmentation label file for one image."""
    height, width = labels.shape
    lines = []
    for label, polygon in label_polygons(labels):
        cls = 0 if class_of is None else class_of.get(label, 0)
        xs = np.clip(polygon[:, 0] / width, 0, 1)
        ys = np.clip(polygon[:, 1] / height, 0, 1)
        coords = " ".join(f"{x:.6f} {y:.6f}" for x, y in zip(xs, ys))
        lines.append(f"{cls} {coords}")
    return lines


def split_names(names: Sequence[str], val_fraction: float, seed: int = 0) -> list[str]:
    """A reproducible validation subset: round(n * fraction) names, at least one when n > 1."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val fraction must lie in [0, 1), got {val_fraction}")
    names = sorted(names)
    n_val = int(round(len(names) * val_fraction))
    if val_fraction > 0 and len(names) > 1:
        n_val = max(1, n_val)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(names, n_val, replace=False).tolist()) if n_val else []


def frames_of(name: str, image: np.ndarray | None, labels: np.ndarray, rgb: bool | None = None):
    """(name, image frame, label frame) for a 2-D image or each frame of a stack (image may be None)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        yield name, None if image is None else np.asarray(image), labels
        return
    if image is not None and np.shape(image)[: labels.ndim] != labels.shape:
        raise ValueError(f"{name}: labels of shape {labels.shape} do not match the image of shape {np.shape(image)}")
    for index in np.ndindex(*labels.shape[:-2]):
        suffix = "_".join(f"{i:03d}" for i in index)
        yield f"{name}_t{suffix}", None if image is None else np.asarray(image[index]), labels[index]


def export_dataset(
    samples, out_dir: str | os.PathLike, fmt: str = "yolo", val_fraction: float = 0.2,
    class_names: Sequence[str] = ("cell",), seed: int = 0,
) -> Path:
    """Write (name, image, labels) samples (2-D or stacks) as a YOLO or COCO dataset.

    Images are normalised to 8 bits exactly as at inference. Returns ``data.yaml``
    (YOLO) or the folder holding ``train.json``/``val.json`` (COCO).
    """
    from .normalize import model_rgb, to_stack_of_frames

    frames = []
    for name, image, labels in samples:
        image = np.asarray(image)
        if image.shape[: np.ndim(labels)] != np.shape(labels):
            raise ValueError(f"{name}: labels of shape {np.shape(labels)} do not match the image of shape {image.shape}")
        for frame_name, frame, frame_labels in frames_of(name, image, labels):
            stacked, _ = to_stack_of_frames(frame)
            frames.append((frame_name, model_rgb(np.asarray(stacked)), np.asarray(frame_labels)))
    if not frames:
        raise ValueError("nothing to export")
    val_names = split_names([f[0] for f in frames], val_fraction, seed)
    if fmt == "yolo":
        return write_yolo_dataset(frames, out_dir, val_names=val_names, class_names=class_names)
    if fmt == "coco":
        return write_coco_dataset(frames, out_dir, val_names=val_names, class_names=class_names)
    raise ValueError(f"unknown format '{fmt}'; use yolo or coco")


def write_coco_dataset(frames, out_dir, *, val_names=(), class_names=("cell",)) -> Path:
    """images/{train,val}/*.png plus train.json and val.json with RLE masks (pycocotools)."""
    from pycocotools import mask as mask_utils

    from .io import write_json

    out = Path(out_dir)
    val_names = set(val_names)
    splits = {s: {"images": [], "annotations": [], "categories": [
        {"id": i + 1, "name": n} for i, n in enumerate(class_names)]} for s in ("train", "val")}
    next_id = 1
    for image_id, (name, image, labels) in enumerate(frames, start=1):
        split = "val" if name in val_names else "train"
        file_name = f"images/{split}/{name}.png"
        write_image(out / file_name, image)
        coco = splits[split]
        coco["images"].append({"id": image_id, "file_name": file_name, "height": labels.shape[0],
                               "width": labels.shape[1]})
        for label in np.unique(labels[labels > 0]):
            rle = mask_utils.encode(np.asfortranarray((labels == label).astype(np.uint8)))
            coco["annotations"].append({
                "id": next_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            })
            next_id += 1
    for split, coco in splits.items():
        write_json(out / f"{split}.json", coco)
    return out


def coco_categories(json_path: str | os.PathLike) -> list[tuple[int, str]]:
    """(category id, name) of a COCO file, in id order."""
    import json

    coco = json.loads(Path(json_path).read_text())
    return sorted((int(c["id"]), str(c.get("name", c["id"]))) for c in coco.get("categories", []))


def read_coco_dataset(json_path: str | os.PathLike, with_classes: bool = False):
    """Yield (name, image, labels) from a COCO file with RLE or polygon masks; ``with_classes``:
    (name, image, labels, {label: class index}), the index being the category's rank in id order."""
    import json

    from pycocotools import mask as mask_utils

    from .io import read_image

    json_path = Path(json_path)
    coco = json.loads(json_path.read_text())
    by_image: dict = {}
    for ann in coco.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    rank = {int(c["id"]): i for i, c in enumerate(sorted(coco.get("categories", []), key=lambda c: int(c["id"])))}
    for info in coco["images"]:
        h, w = info["height"], info["width"]
        labels = np.zeros((h, w), np.int32)
        classes = {}
        for k, ann in enumerate(by_image.get(info["id"], []), start=1):
            classes[k] = rank.get(int(ann.get("category_id", 0)), 0)
            segmentation = ann["segmentation"]
            if isinstance(segmentation, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segmentation, h, w)
            else:
                rle = segmentation
            labels[(mask_utils.decode(rle) > 0) & (labels == 0)] = k
        image = read_image(json_path.parent / info["file_name"])
        if with_classes:
            present = set(np.unique(labels).tolist())
            yield Path(info["file_name"]).stem, image, labels, {k: c for k, c in classes.items() if k in present}
        else:
            yield Path(info["file_name"]).stem, image, labels


def read_label_folders(root: str | os.PathLike):
    """Yield (name, image, labels) from ``root/images`` and ``root/labels`` (instance label images of
    the same stem, optionally ending in ``_labels`` or ``_masks``)."""
    from .io import read_image

    root = Path(root)
    images, labels_dir = root / "images", root / "labels"
    if not images.is_dir() or not labels_dir.is_dir():
        raise DatasetError(f"{root}: expected images/ and labels/ folders")
    by_stem = {}
    for path in sorted(labels_dir.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            stem = path.stem.removesuffix(".ome")
            for suffix in ("_labels", "_masks", "_mask"):
                stem = stem.removesuffix(suffix)
            by_stem[stem] = path
    found = 0
    for path in sorted(images.iterdir()):
        stem = path.stem.removesuffix(".ome")
        if path.is_file() and stem in by_stem:
            found += 1
            yield stem, read_image(path), np.asarray(read_image(by_stem[stem])).astype(np.int32)
    if not found:
        raise DatasetError(f"{root}: no image in images/ has a label image of the same name in labels/")


def read_yolo_dataset(data_yaml: str | os.PathLike, splits: Sequence[str] = ("train", "val", "test")):
    """Yield (name, image, labels) from an ultralytics segmentation dataset (polygons rasterised);
    ``splits``: which of its image folders to read (a folder named by two splits is read once)."""
    import yaml
    from skimage.draw import polygon as fill_polygon

    from .io import IMAGE_SUFFIXES, read_image

    data_yaml = Path(data_yaml)
    config = yaml.safe_load(data_yaml.read_text())
    root = Path(config.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = data_yaml.parent / root
    seen = set()
    for split in splits:
        if not config.get(split):
            continue
        image_dir = root / config[split]
        if image_dir in seen or not image_dir.is_dir():
            continue
        seen.add(image_dir)
        label_dir = Path(str(image_dir).replace(f"{os.sep}images", f"{os.sep}labels", 1))
        for image_path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            image = read_image(image_path)
            h, w = image.shape[:2]
            labels = np.zeros((h, w), np.int32)
            label_file = label_dir / f"{image_path.stem}.txt"
            lines = label_file.read_text().split("\n") if label_file.is_file() else []
            for k, line in enumerate((ln for ln in lines if ln.strip()), start=1):
                values = np.array(line.split()[1:], float).reshape(-1, 2)
                # pixel-edge coordinates -> pixel centres for rasterising
                rr, cc = fill_polygon(values[:, 1] * h - 0.5, values[:, 0] * w - 0.5, shape=(h, w))
                free = labels[rr, cc] == 0
                labels[rr[free], cc[free]] = k
            yield image_path.stem, image, labels


def write_yolo_dataset(
    samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
    out_dir: str | os.PathLike,
    *,
    val_names: Sequence[str] = (),
    class_names: Sequence[str] = ("cell",),
) -> Path:
    """Write (name, uint8 image, instance labels) samples as a YOLO segmentation dataset.

    Returns the path of ``data.yaml``. Samples whose name is in ``val_names`` go to
    the validation split; if none do, the training images double as validation.
    """
    out = Path(out_dir)
    val_names = set(val_names)
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    n_val = 0
    for name, image, labels in samples:
        split = "val" if name in val_names else "train"
        n_val += split == "val"
        write_image(out / "images" / split / f"{name}.png", image)
        (out / "labels" / split / f"{name}.txt").write_text("\n".join(yolo_label_lines(labels)) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(class_names))
    val_dir = "images/val" if n_val else "images/train"
    data_yaml = out / "data.yaml"
    data_yaml.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: {val_dir}\nnames:\n{names}\n")
    return data_yaml


# --- box (detection) datasets -------------------------------------------------------------------------------
# A detection sample is (name, image, boxes, classes): ``boxes`` (N, 4) float x0, y0, x1, y1 in pixel-edge
# units (a box of one pixel i spans [i, i+1)), ``classes`` (N,) int.

DETECTION_SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset folder or file is not what a reader expects; the message names it and what was expected."""


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """(N, 4) float x0, y0, x1, y1 (pixel edges) of each instance of a label image, in label order."""
    from scipy import ndimage

    labels = np.asarray(labels)
    boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop)
             for s in ndimage.find_objects(labels) if s is not None] if labels.max(initial=0) > 0 else []
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def yolo_box_lines(boxes: np.ndarray, shape: tuple[int, int], classes=None) -> list[str]:
    """Lines of an ultralytics detection label file: ``class cx cy w h`` normalised to the image size."""
    height, width = shape
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.zeros(len(boxes), np.int64) if classes is None else np.asarray(classes, np.int64)
    lines = []
    for (x0, y0, x1, y1), cls in zip(boxes, classes):
        lines.append(f"{int(cls)} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                     f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return lines


def write_yolo_box_dataset(samples, out_dir: str | os.PathLike, *, split_of: dict[str, str] | None = None,
                           class_names: Sequence[str] = ("cell",)) -> Path:
    """Write (name, uint8 image, boxes, classes) samples in the layout of a Roboflow "YOLO" export:
    ``train/``, ``valid/`` and ``test/`` folders of ``images/`` and ``labels/``, and a ``data.yaml`` with
    ``../train/images``-style paths and no ``path:`` (ultralytics reads it as it is). ``split_of``: name ->
    "train", "val" or "test" (default train). Returns ``data.yaml``."""
    out = Path(out_dir)
    folder = {"train": "train", "val": "valid", "test": "test"}
    used = set()
    for name, image, boxes, classes in samples:
        split = (split_of or {}).get(name, "train")
        used.add(split)
        base = out / folder[split]
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "labels").mkdir(parents=True, exist_ok=True)
        write_image(base / "images" / f"{name}.png", image)
        (base / "labels" / f"{name}.txt").write_text(
            "\n".join(yolo_box_lines(boxes, np.shape(image)[:2], classes)) + "\n")
    lines = [f"train: ../{folder['train']}/images",
             f"val: ../{folder['val' if 'val' in used else 'train']}/images"]
    if "test" in used:
        lines.append(f"test: ../{folder['test']}/images")
    lines += [f"nc: {len(class_names)}", "names: [" + ", ".join(repr(str(n)) for n in class_names) + "]"]
    data_yaml = out / "data.yaml"
    data_yaml.write_text("\n".join(lines) + "\n")
    return data_yaml


def dataset_split_dirs(data_yaml: str | os.PathLike) -> dict[str, Path]:
    """The image folder of each split a ``data.yaml`` names, resolved as ultralytics resolves them: relative
    to ``path:`` (default: the yaml's folder); a ``../x`` that does not exist there is read as ``x`` (the
    paths of Roboflow exports). A missing folder is an error naming it."""
    import yaml

    data_yaml = Path(data_yaml)
    if data_yaml.is_dir():
        data_yaml = data_yaml / "data.yaml"
    if not data_yaml.is_file():
        raise DatasetError(f"{data_yaml}: no such file; expected a dataset's data.yaml (a Roboflow 'YOLO' export "
                           "or an ultralytics dataset)")
    try:
        config = yaml.safe_load(data_yaml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"{data_yaml}: not valid YAML ({exc})") from None
    if not isinstance(config, dict) or not config.get("train") and not config.get("val"):
        raise DatasetError(f"{data_yaml}: names no 'train' or 'val' image folder")
    root = Path(config.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = data_yaml.parent / root
    dirs = {}
    for split in DETECTION_SPLITS:
        entry = config.get(split)
        if not entry:
            continue
        if isinstance(entry, (list, tuple)):
            entry = entry[0]
        entry = str(entry)
        folder = (root / entry).resolve()
        if not folder.is_dir() and entry.startswith("../"):
            folder = (root / entry[3:]).resolve()
        if not folder.is_dir():
            raise DatasetError(f"{data_yaml}: the {split} folder '{entry}' does not exist (looked for {folder})")
        dirs[split] = folder
    return dirs


def _label_dir(image_dir: Path) -> Path:
    """ultralytics' rule: the last 'images' part of the path replaced by 'labels'."""
    parts = list(image_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return image_dir


def parse_yolo_label_file(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) pixel x0, y0, x1, y1, classes (N,)) of one YOLO label file: box lines ``c cx cy w h``, or
    polygon lines ``c x1 y1 x2 y2 ...`` (their extent). A malformed line is an error naming the file and line."""
    height, width = shape
    boxes, classes = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            cls, coords = int(float(values[0])), np.array(values[1:], np.float64)
        except ValueError:
            raise DatasetError(f"{path}, line {number}: not numbers: {line!r}") from None
        if len(coords) == 4:
            cx, cy, bw, bh = coords
            box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xy = coords.reshape(-1, 2)
            box = (xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max())
        else:
            raise DatasetError(f"{path}, line {number}: expected 'class cx cy w h' (a box) or 'class x1 y1 x2 y2 "
                               f"x3 y3 ...' (a polygon), found {len(values)} values")
        boxes.append((box[0] * width, box[1] * height, box[2] * width, box[3] * height))
        classes.append(cls)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def read_yolo_detection_dataset(data_yaml: str | os.PathLike, splits: Sequence[str] = DETECTION_SPLITS):
    """Yield (name, image, boxes, classes) from a YOLO dataset with box or polygon labels (an ultralytics dataset
    or a Roboflow export as downloaded). Splits it does not name are skipped; a named split with no images, or
    images without a single label file, is an error naming the folder."""
    from .io import IMAGE_SUFFIXES, read_image

    dirs = dataset_split_dirs(data_yaml)
    wanted = [s for s in splits if s in dirs]
    if not wanted:
        raise DatasetError(f"{data_yaml}: names none of the splits {', '.join(splits)} (it has "
                           f"{', '.join(dirs) or 'none'})")
    seen = set()
    for split in wanted:
        image_dir = dirs[split]
        if image_dir in seen:
            continue
        seen.add(image_dir)
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{image_dir}: the {split} folder holds no images "
                               f"(expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
        label_dir = _label_dir(image_dir)
        if not any((label_dir / f"{p.stem}.txt").is_file() for p in images):
            raise DatasetError(f"{label_dir}: no label file for any of the {len(images)} {split} images "
                               f"(expected one <image name>.txt per image, beside '{image_dir.name}' in 'labels')")
        for image_path in images:
            image = read_image(image_path, lazy=False)
            label_file = label_dir / f"{image_path.stem}.txt"
            if label_file.is_file():
                boxes, classes = parse_yolo_label_file(label_file, image.shape[:2])
            else:  # ultralytics' convention: an image without a label file has no objects
                boxes, classes = np.zeros((0, 4)), np.zeros(0, np.int64)
            yield image_path.stem, image, boxes, classes


def read_coco_detection_dataset(json_path: str | os.PathLike, image_dir: str | os.PathLike | None = None):
    """Yield (name, image, boxes, classes) from a COCO JSON with ``bbox`` entries (x, y, w, h); classes are the
    positions of the categories (0-based, in id order). Images are looked up relative to ``image_dir`` (default:
    the JSON's folder; Roboflow's COCO exports keep ``_annotations.coco.json`` beside the images)."""
    import json

    from .io import read_image

    json_path = Path(json_path)
    if not json_path.is_file():
        raise DatasetError(f"{json_path}: no such file; expected a COCO JSON file")
    try:
        coco = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(coco, dict) or not coco.get("images"):
        raise DatasetError(f"{json_path}: lists no images (expected a COCO file with 'images' and 'annotations')")
    base = Path(image_dir) if image_dir is not None else json_path.parent
    category_index = {c["id"]: i for i, c in enumerate(sorted(coco.get("categories", []), key=lambda c: c["id"]))}
    by_image: dict = {}
    for ann in coco.get("annotations", []):
        if "bbox" not in ann:
            raise DatasetError(f"{json_path}: annotation {ann.get('id')} has no 'bbox'")
        by_image.setdefault(ann["image_id"], []).append(ann)
    for info in coco["images"]:
        path = base / info["file_name"]
        if not path.is_file():
            raise DatasetError(f"{json_path}: image '{info['file_name']}' not found in {base}")
        anns = by_image.get(info["id"], [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], np.float64).reshape(-1, 4)
        classes = np.array([category_index.get(a.get("category_id"), 0) for a in anns], np.int64)
        yield Path(info["file_name"]).stem, read_image(path, lazy=False), boxes, classes


def read_detection_dataset(path: str | os.PathLike, splits: Sequence[str] = DETECTION_SPLITS):
    """Boxes from a ``data.yaml`` (or its folder) or a COCO ``.json``; see the two readers."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_coco_detection_dataset(path)
    if path.is_dir() and not (path / "data.yaml").is_file():
        jsons = sorted(path.glob("*.json"))
        if len(jsons) == 1:
            return read_coco_detection_dataset(jsons[0])
        raise DatasetError(f"{path}: no data.yaml (a YOLO dataset or Roboflow 'YOLO' export) and no single COCO "
                           f".json file in this folder")
    return read_yolo_detection_dataset(path, splits)
