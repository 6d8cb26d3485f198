"""The default pipeline against StarDist on the same images, in turn (issue 30's reference).

    python benchmarks/bench_vs_stardist.py --stardist-python /work/sdvenv/bin/python \
        --model /work/stardist_ref/stardist_dsb2018_fluo [--pairs 4] [--data ../shared/data/dsb2018]

StarDist needs TensorFlow, which the plugin never installs, so the two cannot share a process: this script
runs ``bench_speed.py --engines onnx`` (this environment) and ``bench_stardist.py`` (StarDist's environment,
``--stardist-python``; see docs/benchmarks.md, "StarDist on this machine") one after the other, ``--pairs``
times, each a fresh process that loads its model once, warms it up on the first image and times every one of
the 13 520x696 fluorescence validation images. It prints each pair's per-image medians (wall and CPU seconds)
and their ratio, and the median of the pairs' ratios: a machine whose speed drifts slows both halves of a pair
alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stardist-python", type=Path, required=True, help="python of StarDist's environment")
    parser.add_argument("--model", type=Path, default=Path("/work/stardist_ref/stardist_dsb2018_fluo"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-vs-stardist-"))
    pairs = []
    for n in range(args.pairs):
        ours, theirs = work / f"pipeline_{n}.json", work / f"stardist_{n}.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_speed.py"), "--data", str(args.data),
                        "--engines", "onnx", "--json", str(ours)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([str(args.stardist_python), str(ROOT / "benchmarks" / "bench_stardist.py"), "--model",
                        str(args.model), "--data", str(args.data), "--json", str(theirs)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pipeline = json.loads(ours.read_text())["runs"][0]
        stardist = json.loads(theirs.read_text())
        rows = pipeline["rows"]
        pairs.append({
            "pipeline_wall": statistics.median(r["wall"] for r in rows),
            "pipeline_cpu": statistics.median(r["cpu"] for r in rows),
            "pipeline_dsb": statistics.fmean(r["dsb"] for r in rows),
            "pipeline_f1": statistics.fmean(r["f1"] for r in rows),
            "stardist_wall": stardist["summary"]["wall_median"], "stardist_cpu": stardist["summary"]["cpu_median"],
            "stardist_dsb": stardist["summary"]["dsb_mean"], "stardist_f1": stardist["summary"]["f1_50_mean"],
            "images": len(rows)})
        pairs[-1]["ratio_wall"] = pairs[-1]["pipeline_wall"] / pairs[-1]["stardist_wall"]
        pairs[-1]["ratio_cpu"] = pairs[-1]["pipeline_cpu"] / pairs[-1]["stardist_cpu"]
        print(f"pair {n + 1}/{args.pairs} done", flush=True)

    print(f"\n{pairs[0]['images']} images of 520x696 (fluorescence validation images), per-image medians; "
          "pipeline: the shipped default (`segment(image, load_model('nuclei'))`, ONNX Runtime)")
    print("| pair | pipeline wall s | CPU s | StarDist wall s | CPU s | ratio wall | ratio CPU |")
    print("|---|---|---|---|---|---|---|")
    for n, p in enumerate(pairs, 1):
        print(f"| {n} | {p['pipeline_wall']:.3f} | {p['pipeline_cpu']:.3f} | {p['stardist_wall']:.3f} "
              f"| {p['stardist_cpu']:.3f} | {p['ratio_wall']:.2f} | {p['ratio_cpu']:.2f} |")
    summary = {key: statistics.median(p[key] for p in pairs) for key in pairs[0]}
    print(f"| median | {summary['pipeline_wall']:.3f} | {summary['pipeline_cpu']:.3f} | {summary['stardist_wall']:.3f} "
          f"| {summary['stardist_cpu']:.3f} | **{summary['ratio_wall']:.2f}** | {summary['ratio_cpu']:.2f} |")
    print(f"\naccuracy on these images: pipeline DSB {summary['pipeline_dsb']:.3f}, F1@0.5 {summary['pipeline_f1']:.3f}; "
          f"StarDist DSB {summary['stardist_dsb']:.3f}, F1@0.5 {summary['stardist_f1']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"pairs": pairs, "median": summary}, indent=2))


if __name__ == "__main__":
    main()
