"""SparsifyCallback's bad-input batteries, moved here from nbs/04_callback.ipynb (issue 33), with the same assertions:
arguments checked when the callback is made, arguments in the wrong order, and the per-layer and sub-module arguments
that are checked when the fit starts."""
import warnings
import pytest, torch
from torch import nn
from fastcore import test as fc   # fastcore's test_fail and test_eq, as the notebook ran them (not collected as tests)
from fastai.learner import Learner
from fastai.callback.progress import *   # learn.no_bar
from lth_nbdev.callback import SparsifyCallback
from lth_nbdev.criteria import large_final
from lth_nbdev.schedules import iterative
from lth_nbdev.data import digits_dls, digits_cnn

def test_arguments_checked_when_made():
    fc.test_fail(lambda: SparsifyCallback(100), contains='end_sparsity must be in [0, 100)')
    fc.test_fail(lambda: SparsifyCallback(50, lth=True, start_epoch=1, rewind_epoch=2), contains='rewind_epoch (2) must be <= start_epoch (1)')
    fc.test_fail(lambda: SparsifyCallback(50, schedule=lambda p: 1.5), contains='outside [0, 1]')
    fc.test_fail(lambda: SparsifyCallback(50, schedule=lambda p: 0.5 * p), contains='returns 0.5 at p=1; it must return 1')
    fc.test_fail(lambda: SparsifyCallback(50, method='layer'), contains="accepted: 'local', 'global'")
    fc.test_fail(lambda: SparsifyCallback(50, 'neuron'), contains="granularity='neuron' is unknown; accepted: channel, column, filter, kernel, row, weight")

def test_fasterai_arguments_checked():
    fc.test_fail(lambda: SparsifyCallback([50, 50], method='global'), contains="needs method='local'")
    fc.test_fail(lambda: SparsifyCallback(50, start_sparsity=60), contains='start_sparsity (60) must be <= end_sparsity (50)')

def test_fasterai_arguments_checked_when_the_fit_starts():
    learn = Learner(digits_dls(bs=64, seed=0), digits_cnn())
    with learn.no_bar(), learn.no_logging():
        fc.test_fail(lambda: learn.fit(1, cbs=SparsifyCallback([50, 50], verbose=False)), contains='end_sparsity has 2 values, but 3 layers are pruned')
        fc.test_fail(lambda: learn.fit(1, cbs=SparsifyCallback(50, model=nn.Linear(2, 2), verbose=False)),
                  contains="model must be a sub-module of learn.model (the part of it to prune); its layer(s) ''")

def test_arguments_in_the_wrong_order():
    fc.test_fail(lambda: SparsifyCallback(50, 'weight', 'global', iterative, large_final), contains='criteria must be a Criterion')
    fc.test_fail(lambda: SparsifyCallback(50, 'weight', 'global', large_final, large_final), contains='schedule must be a function of progress p')
    fc.test_fail(lambda: SparsifyCallback(50, 'weight', large_final, 'global'), contains="method must be 'local' or 'global'")
    fc.test_fail(lambda: SparsifyCallback(50, large_final), contains='granularity must be a string')
    fc.test_fail(lambda: SparsifyCallback('weight'), contains='end_sparsity must be a number')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); SparsifyCallback(0.5)
    fc.test_eq(str(w[0].message).startswith('end_sparsity=0.5 is read as 0.5%; did you mean 50?'), True)
