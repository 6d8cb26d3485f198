"""Writer: a Labels layer as a TIFF plus ``<stem>_objects.csv`` of its objects."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_labels(path: str, data, meta: dict) -> list[str]:
    from .core.io import write_csv, write_labels as write_label_image
    from .core.result import concat_tables, object_table

    path = Path(path)
    labels = np.asarray(data)
    write_label_image(path, labels)
    # measure the labels as they are now (the user may have edited them)
    if labels.ndim == 2:
        table = object_table(labels)
    else:
        frames = labels.reshape((-1,) + labels.shape[-2:])
        table = concat_tables([object_table(f, frame=i) for i, f in enumerate(frames)])
    features = meta.get("features")
    if features is not None and len(features) and "label" in features:
        by_label = {int(k): i for i, k in enumerate(np.asarray(features["label"]))}
        for column in ("score", "class_id", "class_name"):
            if column in features:
                values = np.asarray(features[column])
                table[column] = np.array(
                    [values[by_label[int(k)]] if int(k) in by_label else table[column][j]
                     for j, k in enumerate(table["label"])], dtype=table[column].dtype,
                )
    csv_path = path.with_name(path.stem + "_objects.csv")
    write_csv(csv_path, table)
    return [str(path), str(csv_path)]
