import numpy as np
import pytest

from napari_cellseg.core import editing


def _two_squares():
    labels = np.zeros((20, 30), np.int32)
    labels[2:8, 2:8] = 1
    labels[10:16, 10:16] = 4
    return labels


def test_merge_delete_and_relabel():
    labels = _two_squares()
    merged = editing.merge(labels, [4, 1]).apply(labels)
    assert set(np.unique(merged)) == {0, 1} and (merged == 1).sum() == 72
    deleted = editing.delete(labels, [4]).apply(labels)
    assert set(np.unique(deleted)) == {0, 1}
    relabelled = editing.relabel_sequential(labels).apply(labels)
    assert set(np.unique(relabelled)) == {0, 1, 2} and (relabelled == 2).sum() == 36
    with pytest.raises(ValueError, match="at least two"):
        editing.merge(labels, [1])


def test_fill_holes_and_remove_small():
    labels = _two_squares()
    labels[4, 4] = 0  # a hole
    labels[18, 28] = 9  # a one-pixel speck
    edit = editing.fill_holes(labels)
    assert len(edit) == 1 and edit.apply(labels)[4, 4] == 1
    cleaned = editing.remove_small(labels, 5).apply(labels)
    assert 9 not in cleaned and 1 in cleaned


def test_split_by_line_keeps_the_largest_piece_and_gives_new_ids():
    labels = np.zeros((20, 30), np.int32)
    labels[5:15, 2:28] = 3  # a long object: two touching cells
    labels[0, 0] = 7
    edit = editing.split_by_line(labels, 3, np.array([[4, 10], [16, 10]]))
    out = edit.apply(labels)
    assert set(np.unique(out)) == {0, 3, 7, 8}
    assert (out == 3).sum() > (out == 8).sum()  # right piece is larger and keeps the id
    assert ((out == 3) | (out == 8)).sum() == (labels == 3).sum()  # no pixel lost to the cut
    with pytest.raises(ValueError, match="does not cut"):
        editing.split_by_line(labels, 3, np.array([[0, 0], [1, 1]]))


def test_split_watershed_separates_two_touching_discs():
    yy, xx = np.mgrid[:40, :60]
    labels = (((yy - 20) ** 2 + (xx - 18) ** 2 < 100) | ((yy - 20) ** 2 + (xx - 38) ** 2 < 100)).astype(np.int32)
    out = editing.split_watershed(labels, 1).apply(labels)
    assert set(np.unique(out)) == {0, 1, 2}
    assert out[20, 18] != out[20, 38]
    seeded = editing.split_watershed(labels, 1, seeds=np.array([[20, 14], [20, 42]])).apply(labels)
    assert abs((seeded == 1).sum() - (seeded == 2).sum()) < 20
