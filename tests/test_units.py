"""Criteria, granularities and schedules piece by piece: exact values and exact messages. The notebooks teach the same
things with a few examples; these run under pytest, so that the mutation check (tools/mutation.sh) sees them."""
import math
from functools import partial
import pytest, torch
from torch import nn
from lth_nbdev.criteria import *
from lth_nbdev.criteria import Criterion, as_criterion, check_scores, criteria_by_name
from lth_nbdev.granularity import *
from lth_nbdev.schedules import *

wf = torch.tensor([2.0, -0.5, 0.1, 1.5, -3.0])
wi = torch.tensor([1.9, 0.6, 1.0, -0.1, -3.5])

@pytest.mark.parametrize('name, expected', [
    ('large_final', [2.0, 0.5, 0.1, 1.5, 3.0]),
    ('small_final', [-2.0, -0.5, -0.1, -1.5, -3.0]),
    ('large_init', [1.9, 0.6, 1.0, 0.1, 3.5]),
    ('small_init', [-1.9, -0.6, -1.0, -0.1, -3.5]),
    ('large_init_large_final', [1.9, 0.5, 0.1, 0.1, 3.0]),
    ('small_init_small_final', [-2.0, -0.6, -1.0, -1.5, -3.5]),
    ('magnitude_increase', [0.1, -0.1, -0.9, 1.4, -0.5]),
    ('movement', [0.1, 1.1, 0.9, 1.6, 0.5]),
])
def test_criteria_values(name, expected):
    c = criteria_by_name[name]
    assert c.name == name and repr(c) == f"Criterion({name})"
    assert torch.allclose(c(wf, wi), torch.tensor(expected))
    out = torch.full((5,), math.nan)
    r = c.into(wf, wi, out)
    assert r.data_ptr() == out.data_ptr() and torch.equal(r, c(wf, wi))   # into: the same scores, in the buffer given

def test_which_criteria_read_the_init_weights():
    assert [n for n, c in criteria_by_name.items() if c.needs_init] == [
        'large_init', 'small_init', 'large_init_large_final', 'small_init_small_final', 'magnitude_increase', 'movement',
        'updating_magnitude_increase', 'updating_movement', 'updating_movmag']
    assert list(criteria_by_name) == ['large_final', 'small_final', 'large_init', 'small_init', 'large_init_large_final',
                                      'small_init_small_final', 'magnitude_increase', 'movement', 'random', 'squared_final',
                                      'updating_magnitude_increase', 'updating_movement', 'updating_movmag']
    with pytest.raises(ValueError, match=r"^criteria 'movement' needs the initial \(rewind-point\) weights, but `init` is None$"): movement(wf)
    assert torch.equal(large_final(wf), wf.abs())                          # a final-only criterion needs no init

def test_random_criterion():
    torch.manual_seed(0); a = random(wf)
    torch.manual_seed(0); b = torch.rand(5)
    assert torch.equal(a, b) and random.into is None and not random.needs_init

def test_criterion_checks_shapes():
    with pytest.raises(ValueError, match=r"^criteria 'movement': `init` has shape \(4,\), `final` \(5,\)$"): movement(wf, wi[:4])
    bad = Criterion(lambda f, i: f.sum(), 'summed')
    with pytest.raises(ValueError, match=r"^criteria 'summed' must return a tensor shaped like the weights \(5,\)$"): bad(wf)
    with pytest.raises(ValueError, match="must return a tensor"): Criterion(lambda f, i: f.tolist(), 'listed')(wf)
    assert Criterion(lambda f, i: f).name == '<lambda>'
    class NoName:
        def __call__(self, f, i): return f
    assert Criterion(NoName()).name == 'criterion'
    c = Criterion(lambda f, i: f * 2, 'double')
    assert c.needs_init is False and c.into is None and torch.equal(c(wf, wi), wf * 2)

def test_as_criterion():
    assert as_criterion(movement) is movement and as_criterion('small_init') is small_init
    def mine(final, init): return final
    c = as_criterion(mine)
    assert isinstance(c, Criterion) and c.name == 'mine' and c.needs_init is False and c.fn is mine
    names = ', '.join(criteria_by_name)
    with pytest.raises(ValueError, match=rf"^criteria='largest' is not a known criterion; accepted names: {names}$"): as_criterion('largest')
    with pytest.raises(ValueError, match=rf"^criteria must be a Criterion, a function f\(final, init\) or one of {names}; got int$"): as_criterion(3)

def test_check_scores():
    check_scores(torch.tensor([0., -1e30, 1e30]))
    with pytest.raises(ValueError, match=r"^criteria returned 2 NaN or infinite score\(s\) for fc; scores must be finite$"):
        check_scores(torch.tensor([1., math.nan, -math.inf]), 'fc')
    with pytest.raises(ValueError, match=r"^criteria returned 1 NaN or infinite score\(s\); scores must be finite$"):
        check_scores(torch.tensor([math.inf]))

# --- granularity ------------------------------------------------------------------------------------------------

def test_weight_view():
    assert weight_view(nn.Conv2d(6, 8, 3, groups=2)) == (2, 4, 3, 3, 3)
    assert weight_view(nn.ConvTranspose1d(6, 8, 3, groups=2)) == (2, 3, 4, 3)
    assert weight_view(nn.Conv3d(2, 4, 1)) == (1, 4, 2, 1, 1, 1)
    assert weight_view(nn.Linear(3, 5)) == (5, 3)
    assert weight_view(nn.Embedding(7, 2)) == (7, 2)

def test_granularities_table():
    fasterai = {'weight': (), 'shared_weight': (1,), 'input_vector': (2,), 'column': (3,), 'row': (4,), 'kernel': (3, 4), 'filter': (2, 3, 4),
                'shared_channel': (1, 2), 'shared_column': (1, 3), 'shared_row': (1, 4), 'vertical_slice': (2, 3), 'horizontal_slice': (2, 4),
                'shared_vertical_slice': (1, 2, 3), 'shared_horizontal_slice': (1, 2, 4), 'shared_kernel': (1, 3, 4), 'layer': (0, 1, 2, 3, 4)}
    assert granularities(nn.Conv2d(6, 8, 3)) == {**fasterai, 'channel': (1, 3, 4)}   # fasterai's dims of (1, out, in, kh, kw), but 'channel'
    swap = lambda dims: tuple(sorted({1: 2, 2: 1}.get(d, d) for d in dims)) if dims != (0, 1, 2, 3, 4) else dims
    assert granularities(nn.ConvTranspose2d(6, 8, 3)) == {**{n: swap(d) for n, d in fasterai.items()}, 'channel': (2, 3, 4)}
    assert granularities(nn.Conv1d(6, 8, 3)) == {'weight': (), 'kernel': (3,), 'filter': (2, 3), 'channel': (1, 3), 'shared_kernel': (1, 3), 'layer': (0, 1, 2, 3)}
    assert granularities(nn.Linear(3, 5)) == {'weight': (), 'row': (1,), 'column': (0,), 'layer': (0, 1)}
    assert granularities(nn.Embedding(7, 2)) == {'weight': ()}

@pytest.mark.parametrize('module, granularity, n_groups', [
    (nn.Conv2d(6, 8, 3, groups=2), 'filter', 8), (nn.Conv2d(6, 8, 3, groups=2), 'channel', 6), (nn.Conv2d(6, 8, 3, groups=2), 'kernel', 24),
    (nn.ConvTranspose2d(4, 6, 3, groups=2), 'filter', 6), (nn.ConvTranspose2d(4, 6, 3, groups=2), 'channel', 4),
    (nn.Conv2d(4, 8, 3, groups=4), 'channel', 4), (nn.Conv2d(4, 8, 3, groups=4), 'filter', 8), (nn.Conv2d(4, 8, 3, groups=4), 'kernel', 8),
    (nn.Linear(3, 5), 'row', 5), (nn.Linear(3, 5), 'column', 3), (nn.Linear(3, 5), 'weight', 15),
])
def test_number_of_groups(module, granularity, n_groups):
    g = group_scores(module.weight.detach(), group_dims(module, granularity), weight_view(module))
    assert g.numel() == n_groups

def test_group_scores_and_expand_groups():
    s = torch.arange(24.).reshape(2, 3, 2, 2)
    g = group_scores(s, (1, 2, 3))
    assert g.shape == (2, 1, 1, 1) and g.flatten().tolist() == [5.5, 17.5]
    assert group_scores(s, ()) is s                                   # 'weight': one group per weight
    assert group_scores(s, (0,), (2, 12)).flatten().tolist() == [(a + a + 12) / 2 for a in range(12)]
    m = expand_groups(torch.tensor([[[[False]]], [[[True]]]]), s.shape)
    assert m.shape == s.shape and not m[0].any() and m[1].all()
    k = expand_groups(torch.tensor([[True], [False]]), (2, 2, 3), (2, 6))  # in a view, back to the weight's shape
    assert k.shape == (2, 2, 3) and k[0].all() and not k[1].any()

def test_granularity_messages():
    with pytest.raises(ValueError, match=r"^granularity must be a string, one of channel, column, filter, kernel, row, weight, layer, shared_kernel, input_vector, shared_weight, shared_channel, shared_column, shared_row, vertical_slice, horizontal_slice, shared_vertical_slice, shared_horizontal_slice; got int$"):
        check_granularity(3)
    with pytest.raises(ValueError, match=r"^granularity='neuron' is unknown; accepted: channel, column, filter, kernel, row, weight, layer, shared_kernel, input_vector, shared_weight, shared_channel, shared_column, shared_row, vertical_slice, horizontal_slice, shared_vertical_slice, shared_horizontal_slice$"):
        group_dims(nn.Linear(2, 2), 'neuron')
    with pytest.raises(ValueError, match=r"^granularity='filter' does not exist for Linear for layer 'fc'; accepted for it: weight, row, column, layer$"):
        group_dims(nn.Linear(2, 2), 'filter', 'fc')
    with pytest.raises(ValueError, match=r"^granularity='row' does not exist for Conv1d; accepted for it: weight, kernel, filter, channel, shared_kernel, layer$"):
        group_dims(nn.Conv1d(2, 2, 1), 'row')
    for g in granularity_names: check_granularity(g)

# --- schedules --------------------------------------------------------------------------------------------------

def test_schedule_values():
    assert [iterative(e / 15) for e in (0, 4, 5, 9, 10, 14, 15)] == [1/3, 1/3, 2/3, 2/3, 1., 1., 1.]
    assert [partial(iterative, n_steps=4)(p) for p in (0, 0.24, 0.25, 0.5, 0.74, 0.75, 0.99, 1)] == [.25, .25, .5, .75, .75, 1., 1., 1.]
    assert one_shot(0.) == one_shot(0.7) == 1.
    assert [agp(p) for p in (0., 0.5, 1.)] == [0., 0.875, 1.] and agp(0.2) == pytest.approx(1 - 0.8 ** 3)
    assert [linear(p) for p in (0., 0.3, 1.)] == [0., 0.3, 1.]
    assert cos(0.) == 0. and cos(1.) == 1. and cos(0.5) == pytest.approx(0.5) and cos(0.25) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)

def test_schedule_name():
    assert schedule_name(agp) == 'agp'
    assert schedule_name(partial(iterative, n_steps=5)) == 'iterative(n_steps=5)'
    assert schedule_name(partial(partial(iterative, n_steps=2))) == 'iterative(n_steps=2)'
    def ramp(p, a=1, b=2): return p
    assert schedule_name(partial(ramp, a=3, b=4)) == 'ramp(a=3, b=4)'
    class Sched:
        def __call__(self, p): return 1.
        def __repr__(self): return 'Sched()'
    assert schedule_name(Sched()) == 'Sched()'

def test_check_schedule():
    for s in (one_shot, iterative, agp, linear, cos, partial(iterative, n_steps=7)): check_schedule(s)
    check_schedule(lambda p: min(1., 2 * p))
    check_schedule(lambda p: 1 - 1e-7 if p < 1 else 1.)
    check_schedule(lambda p: 1 - 1e-7)                                   # within 1e-6 of 1 at the end: fine
    with pytest.raises(ValueError, match=r"^schedule must be a function of progress p in \[0, 1\] such as one_shot, iterative, agp, linear, cos, "
                                         r"or f\(start, end, pos\) such as fastai's sched_cos, or an annealer such as SchedCos; got str$"):
        check_schedule('agp')
    with pytest.raises(ValueError, match=r"^schedule <lambda> returned 2.0, outside \[0, 1\]; a schedule returns the fraction of end_sparsity to reach$"):
        check_schedule(lambda p: 2. if p == 0.5 else 3. if p > 0.5 else p)   # the first value outside is named
    with pytest.raises(ValueError, match=r"returned -0.5, outside"): check_schedule(lambda p: -0.5)
    with pytest.raises(ValueError, match=r"returned 1.1, outside"): check_schedule(lambda p: 1.1)
    with pytest.raises(ValueError, match=r"^schedule <lambda> decreases; masks never regrow, so a schedule must be non-decreasing$"):
        check_schedule(lambda p: 1. if p < 0.5 or p == 1 else 0.9)
    check_schedule(lambda p: 1. if p < 0.5 or p == 1 else 1 - 1e-13)      # a dip of floating-point noise is not a decrease
    with pytest.raises(ValueError, match=r"^schedule <lambda> returns 0.5 at p=1; it must return 1 at the end of the pruning phase, or pruning would stop at 50% of end_sparsity: scale it, or lower end_sparsity$"):
        check_schedule(lambda p: 0.5 * p)
    with pytest.raises(ValueError, match=r"returns 0.99 at p=1"): check_schedule(lambda p: 0.99)
    with pytest.raises(ValueError, match=r"returns 0.8 at p=1; .* or pruning would stop at 80% of end_sparsity"):
        check_schedule(lambda p: 0.5 if p < 1 else 0.8)
    with pytest.raises(ValueError, match=r"decreases"):                 # a dip between two neighbouring points only
        check_schedule(lambda p: p - 0.007 if round(p * 200) == 101 else p)
    seen = []
    check_schedule(lambda p: seen.append(p) or 1., n=5)
    assert seen == [0., 0.25, 0.5, 0.75, 1.]
    seen.clear(); check_schedule(lambda p: seen.append(p) or 1.)
    assert len(seen) == 201 and seen[1] == 0.005                         # by default every 0.5% of the pruning phase

def test_plot_schedule():
    import matplotlib; matplotlib.use('Agg')
    ax = plot_schedule(iterative, 60, n_epoch=10, start_epoch=4)
    x, y = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    assert len(x) == 400 and x[0] == 0 and x[-1] < 10
    assert all(v == 0 for e, v in zip(x, y) if e < 4)
    assert all(v == pytest.approx(20) for e, v in zip(x, y) if 4 <= e < 6)
    assert all(v == pytest.approx(60) for e, v in zip(x, y) if e >= 8.03)
    assert ax.get_xlabel() == 'epoch' and ax.get_ylabel() == 'target sparsity (%)' and ax.lines[0].get_label() == 'iterative'
    assert ax.lines[0].get_drawstyle() == 'steps-post' and tuple(ax.figure.get_size_inches()) == (5, 3)
    ax2 = plot_schedule(linear, ax=ax, label='mine')               # defaults: 50% over 20 epochs, pruning from epoch 0
    assert ax2 is ax and ax.lines[1].get_label() == 'mine'
    x, y = ax.lines[1].get_xdata(), ax.lines[1].get_ydata()
    assert x[0] == 0 and x[-1] == pytest.approx(20 * 399 / 400) and y[0] == 0 and y[-1] == pytest.approx(50 * 399 / 400)

def test_check_schedule_tolerates_float_rounding():
    "A step down by float rounding (1e-12) is not a decrease; anything more is"
    check_schedule(lambda p: 0.5 - 1e-12 if round(p * 200) == 101 else p)
    with pytest.raises(ValueError, match=r"decreases"): check_schedule(lambda p: 0.5 - 1e-9 if round(p * 200) == 101 else p)

def test_check_sparsity_values_and_messages():
    from lth_nbdev.sparsifier import check_sparsity
    assert check_sparsity(50) == 50.0 and check_sparsity(torch.tensor(12.5)) == 12.5 and type(check_sparsity(torch.tensor(0.))) is float
    with pytest.raises(ValueError, match=r"^sparsity must be a number in \[0, 100\) \(percent of prunable weights\), got str$"): check_sparsity('50')
    with pytest.raises(ValueError, match=r"^end_sparsity must be a number in \[0, 100\) \(percent of prunable weights\), got bool$"): check_sparsity(True, 'end_sparsity')
    with pytest.raises(ValueError, match=r"^sparsity must be a number in \[0, 100\) \(percent of prunable weights\), got Tensor$"): check_sparsity(torch.tensor([1., 2.]))
    with pytest.raises(ValueError, match=r"^sparsity must be in \[0, 100\) \(percent of prunable weights\), got 100.0$"): check_sparsity(100)

def test_check_layer_type_values_and_messages():
    from lth_nbdev.sparsifier import check_layer_type
    assert check_layer_type(nn.Linear) == (nn.Linear,) and check_layer_type((nn.Conv2d, nn.Linear)) == (nn.Conv2d, nn.Linear)
    for bad in ((), int, (nn.Linear, int), 'Linear', nn.Linear(2, 2)):
        with pytest.raises(ValueError, match=r"^layer_type must be an nn.Module class or a tuple of them \(e.g. \(nn.Conv2d, nn.Linear\)\), got "):
            check_layer_type(bad)
