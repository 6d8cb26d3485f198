"""Large images read lazily, and batches on a local Dask cluster."""
import json

import numpy as np
import tifffile

from napari_cellseg import segment
from napari_cellseg.cli import main
from napari_cellseg.core.io import read_image

from synthetic import disc_image


def test_large_tiff_is_read_lazily_and_segmented_identically(tmp_path, monkeypatch):
    import dask.array as da

    image, _ = disc_image((768, 640), n=50, seed=2)
    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, image, tile=(256, 256), compression="zlib")
    monkeypatch.setattr("napari_cellseg.core.io.LAZY_BYTES", 1000)  # treat it as larger than memory
    lazy = read_image(path)
    assert isinstance(lazy, da.Array) and lazy.shape == image.shape
    eager = read_image(path, lazy=False)
    assert np.array_equal(eager, image)
    a, b = segment(lazy, "otsu-watershed", tile=256), segment(image, "otsu-watershed", tile=256)
    assert np.array_equal(a.labels, b.labels) and a.n_objects == 50
    assert np.array_equal(tifffile.imread(path), image)  # the input is never modified


def test_batch_on_a_local_dask_cluster_of_two_workers(tmp_path, capsys):
    truths = {}
    for i in range(4):
        image, truth = disc_image((96, 96), n=3 + i, seed=i)
        tifffile.imwrite(tmp_path / f"img{i}.tif", image)
        truths[f"img{i}"] = truth.max()
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    code = main(["segment", str(tmp_path / "*.tif"), "--model", "otsu-watershed", "--out", str(out), "--workers", "2"])
    captured = capsys.readouterr()
    assert code == 2  # one bad input
    assert captured.err.count("napari-cellseg: error:") == 1 and "broken.tif" in captured.err
    for stem, n in truths.items():
        provenance = json.loads((out / f"{stem}_provenance.json").read_text())
        assert provenance["n_objects"] == n
    # a second run resumes: everything finished is skipped
    code = main(["segment", str(tmp_path / "img*.tif"), "--model", "otsu-watershed", "--out", str(out), "--workers", "2"])
    assert code == 0 and capsys.readouterr().out.count("skipped") == 4
