"""Release metadata for PyPI and the napari hub, read from pyproject.toml and the installed manifest.
Builds nothing: `python -m build && twine check dist/*` and `npe2 validate` in a fresh environment
are the manual release check (docs/development.md)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_napari_hub_metadata():
    classifiers = PROJECT["classifiers"]
    assert "Framework :: napari" in classifiers
    assert "Intended Audience :: Science/Research" in classifiers
    assert any(c.startswith("Operating System ::") for c in classifiers)
    assert any(c.startswith("Topic :: Scientific/Engineering") for c in classifiers)
    minimum = re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"])
    assert minimum, PROJECT["requires-python"]
    listed = sorted(int(c.rsplit(".", 1)[1]) for c in classifiers
                    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert listed and listed[0] == int(minimum.group(1)), "classifiers start at the minimum Python"
    assert listed == list(range(listed[0], listed[-1] + 1)), f"a gap in the Python versions: {listed}"
    assert {"Homepage", "Source", "Bug Tracker", "Documentation"} <= set(PROJECT["urls"])
    assert all(url.startswith("https://") for url in PROJECT["urls"].values())
    assert PROJECT["license"] == "BSD-3-Clause"
    for licence_file in PROJECT["license-files"]:
        assert (ROOT / licence_file).is_file()


def test_long_description_is_short_and_exists():
    readme = ROOT / PROJECT["readme"]
    text = readme.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 60, "the PyPI / napari hub description should stay short"
    assert "napari" in text and "pip install" in text


def test_extras_for_docs_and_release():
    extras = PROJECT["optional-dependencies"]
    assert any(req.startswith("mkdocs") for req in extras["docs"])
    assert {"build", "twine"} <= {re.split(r"[<>=\[ ]", req)[0] for req in extras["dev"]}


def test_installed_manifest_is_valid():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_distribution("napari-cellseg")  # validates the schema
    assert manifest.name == "napari-cellseg"
    assert manifest.contributions.widgets, "no widget contributions"
