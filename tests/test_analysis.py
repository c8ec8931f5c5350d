"Instability analysis, mask distances and early-bird stopping on the digits (each test a few seconds on 2 cores)"
import pytest, torch
from torch import nn
from fastai.learner import Learner
from lth_nbdev.data import digits_dls, digits_cnn
from lth_nbdev.callback import model_state
from lth_nbdev.analysis import *

torch.set_num_threads(1)

def make_learner():
    torch.manual_seed(0)
    return Learner(digits_dls(seed=0), digits_cnn(), lr=1e-2)

def prunable(model): return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

def test_barrier_of_network_with_itself_is_zero():
    learn = train_copy(make_learner, 1, data_seed=1)            # a trained network, batch norm included
    state = model_state(learn.model)
    curve = interpolation_curve(learn.model, state, state, learn.dls, n_points=5)
    assert curve.error.nunique() == 1 and curve.loss.nunique() == 1
    assert error_barrier(curve.error) == 0

def test_barrier_definition():
    assert error_barrier([10., 30., 20.]) == 15.
    assert error_barrier([10., 5., 20.]) == 5.                 # the end with the larger error is on the path
    with pytest.raises(ValueError): error_barrier([1.])

def test_interpolation_ends_are_exact_and_masked_weights_stay_zero():
    torch.manual_seed(0)
    a, b = model_state(digits_cnn()), model_state(digits_cnn())
    mask = torch.rand_like(a['3.weight']) > 0.5
    a['3.weight'] *= mask; b['3.weight'] *= mask
    assert all(torch.equal(interpolate_states(a, b, 0.)[k], a[k]) for k in a)
    assert all(torch.equal(interpolate_states(a, b, 1.)[k], b[k]) for k in a)
    for alpha in torch.linspace(0, 1, 11).tolist():
        assert (interpolate_states(a, b, alpha)['3.weight'][~mask] == 0).all()

def test_sparse_instability_keeps_the_mask():
    masks = {n: torch.rand_like(m.weight) > 0.7 for n, m in prunable(make_learner().model).items()}
    res = instability_analysis(make_learner, 1, masks=masks, n_points=3)
    for s in res['states']:
        for n, m in masks.items(): assert (s[f'{n}.weight'][~m] == 0).all()
    assert res['barrier'] >= 0 and len(res['curve']) == 3

def test_rewind_scan_runs_and_reads_stability():
    scan = rewind_scan(make_learner, 2, [0, 2], n_points=3)
    assert scan.rewind_epoch.tolist() == [0, 2]
    # from the last epoch the copies do not train, so both ends are the trunk: no barrier at all
    assert scan.barrier.iloc[-1] == 0 and scan.error_a.iloc[-1] == scan.error_b.iloc[-1]
    assert stable_from(scan) in (0, 2)

def test_mask_distance_identical_and_complementary():
    torch.manual_seed(0)
    m = {'a': torch.rand(5, 4, 3, 3) > 0.5, 'b': torch.rand(10, 7) > 0.2}
    assert mask_distance(m, m) == 0
    assert mask_distance(m, {n: ~k for n, k in m.items()}) == 1
    assert layer_mask_distances(m, {n: ~k for n, k in m.items()}) == {'a': 1., 'b': 1.}

def test_mask_distance_weights_layers_by_size():
    a = {'small': torch.zeros(2, dtype=torch.bool), 'big': torch.zeros(8, dtype=torch.bool)}
    b = {'small': torch.ones(2, dtype=torch.bool), 'big': torch.zeros(8, dtype=torch.bool)}
    assert layer_mask_distances(a, b) == {'small': 1., 'big': 0.}
    assert mask_distance(a, b) == pytest.approx(0.2)
    with pytest.raises(ValueError, match='different layers'): mask_distance(a, {'small': a['small']})

def test_early_bird_stops_and_cleans_up():
    learn = make_learner()
    eb = EarlyBirdCallback(80, eps=0.05, patience=2, verbose=False)
    learn.fit(20, cbs=eb)
    assert eb.stop_epoch is not None and eb.stop_epoch < 19
    assert max(eb.distances[-2:]) < 0.05
    assert model_masks(learn.model) == {}
    rec = EarlyBirdCallback(80, eps=0.05, patience=2, stop=False, verbose=False)
    learn = make_learner(); learn.fit(3, cbs=rec)
    assert len(rec.distances) == 2                               # recorded, never stopped
