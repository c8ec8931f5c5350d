"""Two CPU processes (gloo) run an iterative lottery-ticket search on the digits under DistributedDataParallel.
Both ranks must hold the same masks and weights, no rank may ever compute a mask different from rank 0's,
and the ticket must equal the one a single process finds on the same global batches."""
import torch, torch.multiprocessing as mp
from lth_nbdev.distributed import digits_search, compare_runs, free_port

def test_two_processes_find_the_single_process_ticket(tmp_path):
    out = str(tmp_path)
    kw = dict(n_epoch=4, bs=32, lr=0.1, sparsity=60.)   # global batch 64 = two ranks x 32
    mp.spawn(digits_search, args=(2, free_port(), out, *kw.values()), nprocs=2)
    digits_search(None, 2, 0, out, *kw.values())
    res = compare_runs(out)
    assert res['masks_equal_across_ranks'] and res['weights_equal_across_ranks']
    assert res['mismatches'] == [[0, 0, 0], [0, 0, 0]]        # three pruning steps; ranks agreed before the broadcast
    assert res['masks_equal_single'], res
    assert res['max_weight_difference_single'] < 1e-4, res
    assert abs(res['sparsity'] - 60) < 0.01
