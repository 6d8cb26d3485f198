"""Pure compute core: no Qt and no napari imports allowed here."""
