"""``napari-cellseg classify``: classify tracked cells frame by frame, or a folder of loose crops."""
from __future__ import annotations

from pathlib import Path

from ._common import CliError, check_writable


def add_parser(sub):
    cl = sub.add_parser("classify", help="classify tracked cells frame by frame, or a folder of loose crops")
    cl.add_argument("target", help="image stack (T x H x W [x C]) or a folder of crops")
    cl.add_argument("--labels", default=None, help="tracked labels (T x H x W): label value = track id")
    cl.add_argument("--model", required=True, help="classifier file (the plugin's, or a ResNet50 state dict "
                                                   "or whole model with a 1-channel first convolution)")
    cl.add_argument("--class-names", default=None,
                    help="comma-separated class names in the model's output order (foreign weights; default "
                         "for 8 outputs: the seed's order Nuclear,Aggregate,Cytoplasm,Triple,BinaryAggregate,"
                         "Fragmented,Circular,Senescent)")
    cl.add_argument("--channel", type=int, default=None, help="channel of a multi-channel image")
    cl.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    cl.add_argument("--out", default=".", help="output folder")
    return cl


def run(args) -> int:
    from ..classifier.model import load_classifier
    from ..classifier.predict import classify_iter
    from ..core.io import read_image, write_csv
    from ..pipeline.segment import run as run_job

    class_names = [n.strip() for n in args.class_names.split(",") if n.strip()] if args.class_names else None
    classifier = load_classifier(args.model, device=args.device, class_names=class_names)
    target = Path(args.target)
    out = Path(args.out)
    check_writable(out)
    channels = [args.channel] if args.channel is not None else None
    if target.is_dir():  # loose crops, one folder per class or not
        from ..classifier.predict import classify_crop_folder

        table = classify_crop_folder(target, classifier, channels)
        write_csv(out / "crops_phenotypes.csv", table)
        print(f"{len(table['file'])} crops classified -> {out / 'crops_phenotypes.csv'}")
        return 0
    if not args.labels:
        raise CliError("give --labels TRACKED.tif for an image, or a folder of crops")
    image, labels = read_image(target, lazy=False), read_image(args.labels, lazy=False)
    result = run_job(classify_iter(image, labels, classifier, channels=channels))
    stem = target.stem
    write_csv(out / f"{stem}_phenotypes.csv", result.rows())
    write_csv(out / f"{stem}_tracks_phenotype.csv", result.per_track())
    write_csv(out / f"{stem}_phenotype_counts.csv", result.counts_per_frame())
    print(f"{len(result.table['frame'])} cells classified -> {out / (stem + '_phenotypes.csv')}")
    return 0
