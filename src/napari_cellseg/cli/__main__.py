"""``python -m napari_cellseg.cli``: the same as ``napari-cellseg``."""
import sys

from . import main

sys.exit(main())
