"""The global 50% cut (Sparsifier construction + `sparsify_model`) at several slice sizes (`chunk_size`), in one process.

    python bench/chunk_sizes.py r50     # torchvision ResNet-50
    python bench/chunk_sizes.py lin     # a 67M Linear stack (4 x 4096 x 4096)

Each size runs twice, interleaved, on the same weights reloaded. Prints milliseconds per run (issue 16: whether
smaller slices, which fit the 1 MiB L2 cache, make the cut faster; they do not, each slice costs a fixed set of op calls).
"""
import sys, time, os
import torch
from torch import nn
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prune_case import resnet, linear_stack
import lth_nbdev.sparsifier as sp
from lth_nbdev.criteria import large_final

case = sys.argv[1] if len(sys.argv) > 1 else 'r50'
with torch.no_grad():
    model = resnet('resnet50') if case == 'r50' else linear_stack(4, 4096)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for size in [2**20, 2**18, 2**17, 2**16] * 2:
        sp.chunk_size = size
        model.load_state_dict(state)
        t = time.perf_counter(); s = sp.Sparsifier(model, 'weight', 'global', large_final, layer_type=(nn.Conv2d, nn.Linear)); t1 = time.perf_counter()
        s.sparsify_model(50); t2 = time.perf_counter(); s.remove()
        print(case, f"chunk_size 2^{size.bit_length() - 1}", f"construct {1000 * (t1 - t):.0f} ms, sparsify_model {1000 * (t2 - t1):.0f} ms")
