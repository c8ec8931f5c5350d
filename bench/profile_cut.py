"""cProfile of one global 50% cut of torchvision's ResNet-50 on 1 torch thread (so the ops run on the profiled thread).

    python bench/profile_cut.py

Prints the time of two warm-up cuts, then the top entries by own time: torch ops show as built-ins (issue 16: is the
ResNet-50 cut per-layer Python overhead, or the ops' own work?).
"""
import sys, os, time, cProfile, pstats
import torch
from torch import nn
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prune_case import resnet, prune_ours
import lth_nbdev.sparsifier, lth_nbdev.cut, lth_nbdev.criteria   # imported here, so the warm-up times the cut alone

torch.set_num_threads(1)
def cut(model): prune_ours(model, (nn.Conv2d, nn.Linear))   # the step bench/prune_case.py times
with torch.no_grad():
    for _ in range(2):
        model = resnet('resnet50')
        t = time.perf_counter(); cut(model); print(f"warm-up cut: {time.perf_counter() - t:.3f} s")
    model = resnet('resnet50')
    pr = cProfile.Profile(); pr.enable(); cut(model); pr.disable()
    pstats.Stats(pr).sort_stats('tottime').print_stats(20)
