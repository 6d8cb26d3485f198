"""Per-frame phenotype classification of tracked single cells (ResNet50). No Qt, no napari."""
