"""Where the shared detectron2 fixture is (``../shared/fixtures/detectron2``, or under $CELLSEG_SHARED)."""
from __future__ import annotations

import os
from pathlib import Path

SKIP_REASON = ("shared/fixtures/detectron2 is not present "
               "(set CELLSEG_SHARED to the folder holding fixtures/)")


def detectron2_fixture_dir() -> Path | None:
    candidates = [Path(os.environ["CELLSEG_SHARED"])] if os.environ.get("CELLSEG_SHARED") else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared")
    for shared in candidates:
        if (shared / "fixtures" / "detectron2" / "model_final.pth").is_file():
            return shared / "fixtures" / "detectron2"
    return None
