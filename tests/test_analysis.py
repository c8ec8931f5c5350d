"Instability analysis, mask distances and early-bird stopping on the digits (each test a few seconds on 2 cores)"
import pytest, torch
import pandas as pd
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

def test_sparse_instability_keeps_the_mask_and_measures_the_barrier():
    torch.manual_seed(0)
    masks = {n: torch.rand_like(m.weight) > 0.7 for n, m in prunable(make_learner().model).items()}
    res = instability_analysis(make_learner, 1, masks=masks, n_points=3)
    for s in res['states']:
        for n, m in masks.items(): assert (s[f'{n}.weight'][~m] == 0).all()
    # the curve's three points measured again by hand: mix the two ends, recompute batch norm, count the mistakes
    learn = make_learner()
    bn_dl = learn.dls.train.new(shuffle=False)
    errors = []
    for alpha in (0., 0.5, 1.):
        learn.model.load_state_dict(interpolate_states(*res['states'], alpha), strict=False)
        torch.manual_seed(0); recompute_bn_stats(learn.model, bn_dl)
        learn.model.eval()
        with torch.no_grad():
            wrong = sum(int((learn.model(x).argmax(1) != y).sum()) for x, y in learn.dls.valid)
        errors.append(100 * wrong / len(learn.dls.valid.dataset))
    assert res['curve'].error.tolist() == pytest.approx(errors)
    assert res['barrier'] == pytest.approx(max(errors) - (errors[0] + errors[2]) / 2)
    assert (res['error_a'], res['error_b']) == pytest.approx((errors[0], errors[2]))

def test_rewind_scan_runs_and_reads_stability():
    scan = rewind_scan(make_learner, 2, [0, 2], n_points=3)
    assert scan.rewind_epoch.tolist() == [0, 2]
    # from the last epoch the copies do not train, so both ends are the trunk: no barrier at all
    assert scan.barrier.iloc[-1] == 0 and scan.error_a.iloc[-1] == scan.error_b.iloc[-1]
    for row in scan.itertuples():                               # each barrier is its own curve's, by hand
        assert row.barrier == pytest.approx(max(row.errors) - (row.errors[0] + row.errors[-1]) / 2)
        assert row.stable == (row.barrier < 2)
    assert stable_from(scan) == (0 if scan.barrier.iloc[0] < 2 else 2)

@pytest.mark.parametrize('barriers, threshold, expected', [
    ({0: [5.], 1: [3.], 2: [1.], 3: [0.5]}, 2., 2),          # stable from epoch 2 on
    ({0: [0.5], 1: [0.1], 2: [0.]}, 2., 0),                   # stable throughout
    ({0: [1.], 1: [5.], 2: [1.]}, 2., 2),                     # an early dip does not count: epoch 1 is unstable
    ({0: [5.], 1: [1.], 2: [3.]}, 2., None),                  # the last epoch tested is unstable: stable from nowhere
    ({0: [5.], 1: [1., 3.5], 2: [1.5, 2.4]}, 2., 2),           # the mean of the seed pairs decides: 2.25 at epoch 1, 1.95 at 2...
    ({0: [5.], 1: [1., 3.5], 2: [1.5, 2.4]}, 2.3, 1),          # ...so a threshold of 2.3 makes epoch 1 stable too
    ({0: [2.], 1: [2.]}, 2., None),                            # "below the threshold" is strict
])
def test_stable_from(barriers, threshold, expected):
    rows = [dict(rewind_epoch=k, barrier=b) for k, bs in barriers.items() for b in bs]
    assert stable_from(pd.DataFrame(rows[::-1]), threshold) == expected     # row order does not matter

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
