"""The foundation: result, tile, progress and backend-protocol types, tiling, normalisation, metrics,
I/O, datasets, options. It imports no other part of the package, no Qt and no napari."""
