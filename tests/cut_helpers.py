"""Helpers shared by the cut's tests (`test_fast_global.py`, `test_cut_syncs.py`)."""
from contextlib import contextmanager
import lth_nbdev.cut as C

@contextmanager
def cut_path(sync_free:bool):
    "Cut on the CPU path (False) or on the sync-free path a GPU takes (True)"
    old, C.sync_free = C.sync_free, sync_free
    try: yield
    finally: C.sync_free = old
