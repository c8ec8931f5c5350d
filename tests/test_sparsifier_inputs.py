"""Bad inputs to the sparsifier fail with a message naming the parameter and what it accepts.

These are the checks that nbs/03_sparsifier.ipynb ran in full on its page; the page now shows one example of each
message, and the whole table is here (same assertions).
"""
import math
import torch
from torch import nn
from fastcore import test as ft   # as a module: pytest would collect `test_eq` and `test_fail` as tests
from lth_nbdev.sparsifier import Sparsifier, check_sparsity

def small_cnn(): return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

def test_check_sparsity_range():
    ft.test_eq(check_sparsity(50), 50.)
    for bad in (-1, 100, 150, float('nan'), float('inf')): ft.test_fail(lambda: check_sparsity(bad), contains='must be in [0, 100)')

def test_bad_constructor_arguments():
    ft.test_fail(lambda: Sparsifier(small_cnn(), 'filter', 'global', layer_type=(nn.Conv2d, nn.Linear)),
              contains="granularity='filter' does not exist for Linear")
    ft.test_fail(lambda: Sparsifier(small_cnn(), 'weight', 'globl'), contains="method='globl' is unknown; accepted: 'local', 'global'")

class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight                 # tied

def test_tied_to_an_unpruned_module():
    lm = TinyLM()
    ft.test_fail(lambda: Sparsifier(lm), contains="layers 'head' and 'embed' share one weight tensor (tied weights); 'embed' (Embedding) is not pruned")
    ft.test_eq(hasattr(lm.head, 'sparsity_mask'), False)        # refused before any mask was attached

def test_bad_sparsity_per_layer_and_round_to():
    torch.manual_seed(0); sp = Sparsifier(small_cnn(), 'filter', 'local')
    sp.sparsify_model(70, round_to=4)
    ft.test_fail(lambda: sp.sparsify_model([50]), contains='one value per pruned layer (2')
    ft.test_fail(lambda: Sparsifier(small_cnn(), method='global').sparsify_model([50, 50]), contains="needs method='local'")
    ft.test_fail(lambda: sp.sparsify_model(50, round_to=0), contains='round_to must be None or an integer >= 1')
    ft.test_fail(lambda: sp.sparsify_layer('6', 50), contains="layer must be one of the pruned layers ('0', '2')")
