"""The classical baseline: Otsu threshold and seeded watershed, no weights."""
