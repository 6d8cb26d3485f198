"""``napari-cellseg track``: link per-frame instance labels into tracks (laptrack)."""
from __future__ import annotations

from pathlib import Path

from ._common import CliError, check_writable


def add_parser(sub):
    tr = sub.add_parser("track", help="link per-frame instance labels (T x H x W) into tracks (laptrack)")
    tr.add_argument("labels", help="a T x H x W stack of per-frame instance labels")
    tr.add_argument("--out", default=".", help="output folder")
    tr.add_argument("--image", default=None, help="intensity stack of the same shape, for per-track intensity")
    tr.add_argument("--max-distance", type=float, default=20.0, help="largest move between frames, pixels")
    tr.add_argument("--gap", type=int, default=1, help="frames a cell may be missing and still be reconnected")
    tr.add_argument("--no-divisions", action="store_true", help="do not link daughters to their mother")
    return tr


def run(args) -> int:
    from ..core.io import read_image, write_csv, write_labels
    from ..core.tracking import track_iter
    from ..pipeline.segment import run as run_job

    path = Path(args.labels)
    labels = read_image(path, lazy=False)
    if labels.dtype.kind not in "iu":
        raise CliError(f"{path.name}: label images must hold integers, found {labels.dtype}")
    intensity = read_image(args.image, lazy=False) if args.image else None
    result = run_job(track_iter(labels, intensity, max_distance=args.max_distance, gap_frames=args.gap,
                                divisions=not args.no_divisions))
    out = Path(args.out)
    check_writable(out)
    stem = path.stem[: -len("_labels")] if path.stem.endswith("_labels") else path.stem
    write_labels(out / f"{stem}_tracked.tif", result.tracked)
    write_csv(out / f"{stem}_tracks.csv", result.table)
    print(f"{path.name}: {result.n_tracks} tracks over {labels.shape[0]} frames -> {out / (stem + '_tracked.tif')}")
    return 0
