"""core.heap: objects alive at a settle are skipped by later full collections, and can be released."""
import gc

from napari_cellseg.core.heap import release_frozen, settle_heap


def test_settle_heap_freezes_what_is_alive_and_release_gives_it_back():
    try:
        release_frozen()
        before = gc.get_freeze_count()
        assert before == 0
        kept = [[i] for i in range(10_000)]  # tracked containers, alive at the settle
        settle_heap(collect=False)
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        assert sum(gc.get_count()) < frozen  # the generations a collection walks hold only what came since
        release_frozen()
        assert gc.get_freeze_count() == 0
        # and a collecting settle frees garbage first: a reference cycle made now is not frozen but freed
        import weakref

        class Node:
            pass

        node = Node()
        node.me = node
        alive = weakref.ref(node)
        del node
        settle_heap(collect=True)
        assert alive() is None
    finally:
        release_frozen()
