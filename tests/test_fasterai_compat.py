"""fasterai-0.1.8-style code through `lth_nbdev.fasterai`, checked against fasterai 0.1.8 itself: masks on small models,
printed progressions of the callback. fasterai is downloaded (no dependencies) into a temporary folder; the tests that
need it are skipped when it cannot be."""
import contextlib, glob, io, subprocess, sys, tempfile, zipfile, warnings
from types import SimpleNamespace
import pytest, torch
from torch import nn
import lth_nbdev.fasterai as F

@pytest.fixture(scope='module')
def fai():
    "fasterai 0.1.8's sparse modules, from a wheel downloaded into a temporary folder"
    d = tempfile.mkdtemp(prefix='fasterai018_')
    try: subprocess.run([sys.executable, '-m', 'pip', 'download', 'fasterai==0.1.8', '--no-deps', '-d', d, '-q'],
                        check=True, timeout=180, capture_output=True)
    except Exception as e: pytest.skip(f'fasterai 0.1.8 cannot be downloaded here: {e}')
    whl = glob.glob(f'{d}/fasterai-0.1.8-*.whl')
    if not whl: pytest.skip('fasterai 0.1.8 wheel not found')
    zipfile.ZipFile(whl[0]).extractall(f'{d}/x')
    sys.path.insert(0, f'{d}/x')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            import fasterai.sparse.sparsifier as S, fasterai.sparse.criteria as C, fasterai.sparse.schedule as Sch
            import fasterai.sparse.sparsify_callback as CB
    except Exception as e: pytest.skip(f'fasterai 0.1.8 does not import here: {e}')
    yield SimpleNamespace(Sparsifier=S.Sparsifier, criteria=C, schedules=Sch, SparsifyCallback=CB.SparsifyCallback)
    sys.path.remove(f'{d}/x')

def two_convs(seed=0):
    "Two convolutions with 2x4 kernels: every fasterai granularity has an even number of groups (where a quantile and a count agree)"
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(4, 6, (2, 4)), nn.ReLU(), nn.Conv2d(6, 8, (2, 4)), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

def their_masks(model):
    "fasterai's `_mask` of each Conv2d, broadcast to the weight's shape, as bool"
    return [(m._mask * torch.ones_like(m.weight)).bool() for m in model if isinstance(m, nn.Conv2d)]

def our_masks(model):
    return [(m._mask * torch.ones_like(m.weight)).bool() for m in model if isinstance(m, nn.Conv2d)]

fasterai_conv2d = ['weight', 'shared_weight', 'channel', 'column', 'row', 'kernel', 'filter', 'shared_channel', 'shared_column',
                   'shared_row', 'vertical_slice', 'horizontal_slice', 'shared_vertical_slice', 'shared_horizontal_slice',
                   'shared_kernel', 'layer']

@pytest.mark.parametrize('granularity', fasterai_conv2d)
def test_every_conv2d_granularity_gives_fasterais_mask(fai, granularity):
    a, b = two_convs(), two_convs()
    fai.Sparsifier(a, granularity, 'local', fai.criteria.large_final).prune_model(50)
    F.Sparsifier(b, granularity, 'local', F.large_final).prune_model(50)
    for x, y in zip(their_masks(a), our_masks(b)): assert torch.equal(x, y)

@pytest.mark.parametrize('crit', ['large_final', 'squared_final', 'small_final', 'large_init', 'small_init', 'large_init_large_final',
                                  'small_init_small_final', 'magnitude_increase', 'movement', 'updating_magnitude_increase',
                                  'updating_movement', 'updating_movmag'])
@pytest.mark.parametrize('method', ['local', 'global'])
def test_criteria_give_fasterais_mask(fai, crit, method):
    "Single weights, every criterion both libraries have; the weights move after the sparsifier is made, so init-based ones differ"
    if method == 'global' and crit.startswith('updating'):
        pytest.skip("fasterai 0.1.8's global cut scores each layer twice, and an updating criterion then compares the weights with themselves")
    a, b = two_convs(), two_convs()
    sa, sb = fai.Sparsifier(a, 'weight', method, getattr(fai.criteria, crit)), F.Sparsifier(b, 'weight', method, getattr(F, crit))
    torch.manual_seed(1)
    noise = [0.05 * torch.randn_like(m.weight) for m in a if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for model in (a, b):
            for m, n in zip([m for m in model if isinstance(m, nn.Conv2d)], noise): m.weight.add_(n)
    sa.prune_model(50); sb.prune_model(50)
    for x, y in zip(their_masks(a), our_masks(b)): assert torch.equal(x, y)

def test_global_filter_with_groups_of_one_size(fai):
    "fasterai's global cut counts groups; with groups of one size that is the weights' count, as here"
    torch.manual_seed(0)
    mk = lambda: nn.Sequential(nn.Conv2d(4, 6, 3), nn.Conv2d(4, 10, 3), nn.ReLU())   # fasterai reads the module after each conv
    torch.manual_seed(0); a = mk(); torch.manual_seed(0); b = mk()
    fai.Sparsifier(a, 'filter', 'global', fai.criteria.large_final).prune_model(50)
    F.Sparsifier(b, 'filter', 'global', F.large_final).prune_model(50)
    for x, y in zip(their_masks(a), our_masks(b)): assert torch.equal(x, y)

def test_round_to_per_layer_list_and_prune_layer(fai):
    a, b = two_convs(), two_convs()
    fa, fb = fai.Sparsifier(a, 'filter', 'local', fai.criteria.large_final), F.Sparsifier(b, 'filter', 'local', F.large_final)
    fa.prune_model(50, round_to=4); fb.prune_model(50, round_to=4)                   # 6 filters: 3 kept -> 4; 8 filters: 4 kept
    for x, y in zip(their_masks(a), our_masks(b)): assert torch.equal(x, y)
    assert [int(m.flatten(1).any(1).sum()) for m in our_masks(b)] == [4, 4]
    a, b = two_convs(), two_convs()
    fa, fb = fai.Sparsifier(a, 'kernel', 'local', fai.criteria.large_final), F.Sparsifier(b, 'kernel', 'local', F.large_final)
    fa.prune_model([25, 75]); fb.prune_model([25, 75])                              # one sparsity per layer
    for x, y in zip(their_masks(a), our_masks(b)): assert torch.equal(x, y)
    a, b = two_convs(), two_convs()
    fa, fb = fai.Sparsifier(a, 'weight', 'local', fai.criteria.large_final), F.Sparsifier(b, 'weight', 'local', F.large_final)
    fa.prune_layer(a[2], 50); fb.prune_layer(b[2], 50)                               # one layer alone
    assert torch.equal((a[2]._mask * torch.ones_like(a[2].weight)).bool(), b[2]._mask.bool())
    assert not hasattr(a[0], '_mask') and bool(b[0]._mask.all())

def test_schedules_agree(fai):
    for name in ('one_shot', 'iterative', 'sched_agp', 'sched_onecycle'):
        for pos in (0., 0.1, 1/3, 0.5, 0.77, 0.99, 1.):
            assert abs(float(getattr(fai.schedules, name)(10, 60, pos)) - float(getattr(F, name)(10, 60, pos))) < 1e-9, (name, pos)

def progression(learner_fn, cb, fit):
    "What a fit prints, line by line"
    out = io.StringIO()
    learn = learner_fn()
    with contextlib.redirect_stdout(out), learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fit(learn, cb)
    return learn, out.getvalue().splitlines()

@pytest.fixture(scope='module')
def dls():
    from lth_nbdev.data import digits_dls
    return digits_dls(bs=128)

def digits_learner(dls):
    from fastai.learner import Learner
    from lth_nbdev.data import digits_cnn
    def make():
        torch.manual_seed(0)
        return Learner(dls, digits_cnn())
    return make

@pytest.mark.parametrize('case', ['sched_cos', 'iterative_start', 'list_round_to_submodule'])
def test_callback_prints_fasterais_progression(fai, dls, case):
    "The same fasterai-style call, through fasterai 0.1.8 and through lth_nbdev.fasterai: the same lines, and (lr 0) the same masks"
    from fastai.callback.schedule import sched_cos, fit_one_cycle   # noqa: F401 (patches Learner.fit_one_cycle)
    make = digits_learner(dls)
    if case == 'sched_cos':
        args = lambda lib, crit, body: ((50, 'weight', 'local', crit, sched_cos), {'start_epoch': 1})
        fit = lambda learn, cb: learn.fit_one_cycle(4, 0., cbs=cb)
    elif case == 'iterative_start':
        args = lambda lib, crit, body: ((50, 'weight', 'global', crit, lib.iterative), {'start_sparsity': 10, 'start_epoch': 1})
        fit = lambda learn, cb: learn.fit(4, 0., cbs=cb)
    else:
        args = lambda lib, crit, body: (([25, 50, 75], 'filter', 'local', crit, lib.sched_agp), {'round_to': 2, 'model': body})
        fit = lambda learn, cb: learn.fit(3, 0., cbs=cb)
    runs = {}
    for lib, name in ((fai.schedules, 'fasterai'), (F, 'ours')):
        crit = fai.criteria.large_final if name == 'fasterai' else F.large_final
        Callback = fai.SparsifyCallback if name == 'fasterai' else F.SparsifyCallback
        learn = make()
        a, kw = args(lib, crit, learn.model[:11])
        cb = Callback(*a, **kw)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
            warnings.simplefilter('ignore'); fit(learn, cb)
        runs[name] = learn, out.getvalue().splitlines()
    (la, oa), (lb, ob) = runs['fasterai'], runs['ours']
    pick = lambda lines: [l for l in lines if l.startswith(('Pruning of', 'Saving Weights', 'Sparsity at the end', 'Sparsity in'))]
    assert pick(oa) == pick(ob)
    assert any(l.startswith('Sparsity at the end') for l in pick(ob))
    for ma, mb in zip(la.model.modules(), lb.model.modules()):       # lr 0: the weights only change where they are pruned
        if isinstance(ma, nn.Conv2d): assert torch.equal(ma.weight == 0, mb.weight == 0)

def test_fasterai_names_are_exported():
    ns = {}
    exec('from lth_nbdev.fasterai import *', ns)
    for name in ('Sparsifier', 'SparsifyCallback', 'one_shot', 'iterative', 'sched_agp', 'sched_onecycle', 'large_final', 'squared_final',
                 'updating_magnitude_increase', 'updating_movement', 'updating_movmag', 'movement', 'random'):
        assert name in ns, name
    assert hasattr(ns['Sparsifier'], 'prune_layer') and hasattr(ns['Sparsifier'], 'prune_model')
    from lth_nbdev.sparsifier import Sparsifier
    assert not hasattr(Sparsifier, 'prune_model')                   # the main API keeps its names
