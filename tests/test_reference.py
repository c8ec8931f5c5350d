"""The masks against a slow, obviously correct reference written here: every criterion x granularity x method, on
random small models (Linear, Conv1d, Conv2d, ConvTranspose2d, grouped and depthwise convolutions), with and
without regrowth, through `Sparsifier` (both routes of the global cut, the crowded-bin one forced by a small
`max_candidates`), through `SparsifyCallback(lth=True, rewind_epoch=1)` and through `find_ticket`.

The reference knows nothing of histograms, keys, views or slices: it writes every group out as a list of weight
positions, scores it by the mean of its members, sorts with Python's stable `sorted`, and takes the first ones."""
import math, random as pyrandom
import pytest, torch
from torch import nn
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastai.callback.progress import *
import lth_nbdev.sparsifier as S
from lth_nbdev.sparsifier import Sparsifier, mask_name
from lth_nbdev.criteria import criteria_by_name
from lth_nbdev.schedules import iterative
from lth_nbdev.callback import SparsifyCallback
from lth_nbdev.search import find_ticket
from lth_nbdev.data import digits_tensors, tensor_dls

# Zhou et al. (2019), written out again: a higher score is kept
CRITERIA = {
    'large_final': lambda wf, wi: wf.abs(),
    'small_final': lambda wf, wi: -wf.abs(),
    'large_init': lambda wf, wi: wi.abs(),
    'small_init': lambda wf, wi: -wi.abs(),
    'large_init_large_final': lambda wf, wi: torch.minimum(wf.abs(), wi.abs()),
    'small_init_small_final': lambda wf, wi: -torch.maximum(wf.abs(), wi.abs()),
    'magnitude_increase': lambda wf, wi: wf.abs() - wi.abs(),
    'movement': lambda wf, wi: (wf - wi).abs(),
    'random': lambda wf, wi: torch.rand_like(wf),
    'squared_final': lambda wf, wi: wf.square(),
}
# the `updating_` criteria score against the weights of the previous cut, not the rewind point: not modelled here (yet)
UPDATING = [n for n, c in criteria_by_name.items() if getattr(c, 'updating', False)]
INIT_BASED = ['large_init', 'small_init', 'large_init_large_final', 'small_init_small_final', 'magnitude_increase', 'movement']
CONVS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)

def test_the_reference_covers_every_criterion():
    assert set(CRITERIA) == set(criteria_by_name) - set(UPDATING)
    assert INIT_BASED == [n for n, c in criteria_by_name.items() if c.needs_init and n not in UPDATING]

def groups(module, granularity):
    """Every group of `module` as a list of flat positions in its weight, in the documented order. A convolution with
    `groups=g` connects input channel c to output channel o only when both are in the same one of the g groups."""
    w = module.weight
    pos = torch.arange(w.numel()).view(w.shape)
    if granularity == 'weight': return [[i] for i in range(w.numel())]
    if isinstance(module, nn.Linear):
        if granularity == 'row': return [pos[o, :].tolist() for o in range(w.shape[0])]
        return [pos[:, i].tolist() for i in range(w.shape[1])]
    transposed = isinstance(module, nn.ConvTranspose2d)
    g, cin, cout = module.groups, module.in_channels, module.out_channels
    def connected(o, c): return c // (cin // g) == o // (cout // g)
    def kernel(o, c):   # the kernel from input channel c to output channel o
        return (pos[c, o % (cout // g)] if transposed else pos[o, c % (cin // g)]).flatten().tolist()
    if granularity == 'filter': return [sum((kernel(o, c) for c in range(cin) if connected(o, c)), []) for o in range(cout)]
    if granularity == 'channel': return [sum((kernel(o, c) for o in range(cout) if connected(o, c)), []) for c in range(cin)]
    assert granularity == 'kernel'   # in the order of the stored weight's first two dimensions
    pairs = [(o, c) for c in range(cin) for o in range(cout)] if transposed else [(o, c) for o in range(cout) for c in range(cin)]
    return [kernel(o, c) for o, c in pairs if connected(o, c)]

def test_groups_partition_every_weight():
    "The reference's own groups cover each weight exactly once (a check of the reference itself)"
    for m in (nn.Conv2d(4, 6, 3, groups=2), nn.ConvTranspose2d(4, 6, 2, groups=2), nn.Conv2d(3, 6, 1, groups=3), nn.Conv1d(2, 3, 2)):
        for gran in ('kernel', 'filter', 'channel'):
            flat = sorted(sum(groups(m, gran), []))
            assert flat == list(range(m.weight.numel())), (m, gran)

def reference_masks(layers, weights, inits, old, sparsity, crit, granularity, method, regrow):
    "Keep-masks by layer name, computed the slow way from the weights, init weights and old masks"
    frac = sparsity / 100
    units = []   # (score, layer index, group index, layer name, positions); removed groups score -inf
    for j, (n, m) in enumerate(layers.items()):
        scores = CRITERIA[crit](weights[n], inits.get(n)).float().reshape(-1).tolist()
        alive = old[n].reshape(-1).tolist()
        for i, members in enumerate(groups(m, granularity)):
            dead = not regrow and not all(alive[p] for p in members)
            score = -math.inf if dead else sum(scores[p] for p in members) / len(members)
            units.append((score, j, i, n, members))
    def remove_first(us, count):
        keep = {n: torch.ones(m.weight.numel(), dtype=torch.bool) for n, m in layers.items()}
        for *_, n, members in sorted(us, key=lambda u: u[:3])[:count]: keep[n][members] = False
        return keep
    if granularity == 'weight':   # exactly round(frac * n) go, the removed ones first (more if more were removed)
        def cut(us):
            dead = sum(u[0] == -math.inf for u in us)
            return remove_first(us, max(round(frac * len(us)), dead))
        if method == 'global': keep = cut(units)
        else: keep = {n: cut([u for u in units if u[3] == n])[n] for n in layers}
    elif method == 'local':       # round(frac * groups) of each layer
        keep = {n: remove_first(us, round(frac * len(us)))[n] for n in layers for us in [[u for u in units if u[3] == n]]}
    else:                         # the lowest groups until the removed weights are closest to frac * n
        ordered = sorted(units, key=lambda u: u[:3])
        counts = [0]
        for u in ordered: counts.append(counts[-1] + len(u[4]))
        target = frac * counts[-1]
        best = min(range(len(counts)), key=lambda c: (abs(counts[c] - target), c))
        keep = remove_first(units, best)
    keep = {n: k.view(layers[n].weight.shape) for n, k in keep.items()}
    return keep if regrow else {n: k & old[n] for n, k in keep.items()}

def random_model(rng, granularity):
    "A few layers of random kinds and sizes, drawn by `rng`, that have `granularity`"
    convs = ['conv1d', 'conv2d', 'convt2d', 'grouped', 'depthwise', 'grouped_t']
    kinds = {'row': ['linear'], 'column': ['linear'], 'weight': ['linear'] + convs}.get(granularity, convs)
    layers = []
    for _ in range(rng.randint(1, 4)):
        a, b, k, g = rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 3), rng.randint(2, 3)
        layers.append({'linear': lambda: nn.Linear(a, b), 'conv1d': lambda: nn.Conv1d(a, b, k), 'conv2d': lambda: nn.Conv2d(a, b, k),
                       'convt2d': lambda: nn.ConvTranspose2d(a, b, k), 'grouped': lambda: nn.Conv2d(a * g, b * g, k, groups=g),
                       'depthwise': lambda: nn.Conv2d(a, a * b, k, groups=a), 'grouped_t': lambda: nn.ConvTranspose2d(a * g, b * g, k, groups=g),
                      }[rng.choice(kinds)]())
    return nn.ModuleList(layers)

def layer_types(granularity): return (nn.Linear,) if granularity in ('row', 'column') else (nn.Linear,) + CONVS if granularity == 'weight' else CONVS

def check_step(sp, crit, granularity, method, regrow, sparsity, inits):
    "Prune `sp` to `sparsity` (new_masks, then sparsify_model) and compare both with the reference"
    layers = sp.layers
    weights = {n: m.weight.detach().clone() for n, m in layers.items()}
    old = {n: k.clone() for n, k in sp.masks.items()}
    rng_state = torch.get_rng_state()
    want = reference_masks(layers, weights, inits, old, sparsity, crit, granularity, method, regrow)
    torch.set_rng_state(rng_state)   # `random` draws the same scores in the library as in the reference
    fresh = sp.new_masks(sparsity)
    torch.set_rng_state(rng_state)
    sp.sparsify_model(sparsity)
    for n, m in layers.items():
        assert fresh[n].dtype == torch.bool and fresh[n].shape == m.weight.shape
        assert torch.equal(fresh[n], want[n]), (n, m)
        assert torch.equal(getattr(m, mask_name), want[n]), (n, m)
        assert torch.equal(m.weight.detach(), weights[n] * want[n])   # removed weights zero, the others untouched

GRANULARITIES = ['weight', 'kernel', 'filter', 'channel', 'row', 'column']

# every criterion x method x granularity: a quarter of them in the quick set (each criterion, method and granularity several
# times), the rest marked `slow` (bash tools/test.sh --full, CI and the mutation check run them all)
REFERENCE_CASES = [pytest.param(c, m, g, marks=() if (i + j + k) % 4 == 0 else pytest.mark.slow)
                   for i, c in enumerate(CRITERIA) for j, m in enumerate(['local', 'global']) for k, g in enumerate(GRANULARITIES)]

@pytest.mark.parametrize('crit, method, granularity', REFERENCE_CASES)
def test_sparsifier_matches_reference(crit, method, granularity, monkeypatch):
    "Two pruning steps on random models (the second from trained weights), each equal to the reference's masks"
    routes = [(2**20, None), (7, 0)] if granularity == 'weight' else [(2**20, None)]   # slices of 7 and every bin crowded
    for seed in range(2):
        for regrow in (False, True):
            for chunk, max_candidates in routes:
                monkeypatch.setattr(S, 'chunk_size', chunk); monkeypatch.setattr(S, 'max_candidates', max_candidates)
                rng = pyrandom.Random(f"{crit} {method} {granularity} {seed}")
                torch.manual_seed(rng.randrange(2**31))
                model = random_model(rng, granularity)
                ties = granularity == 'weight' and seed == 1   # weights from a small pool: ties everywhere (exact means only per weight)
                if ties:
                    with torch.no_grad():
                        for m in model: m.weight.copy_(torch.randint(-3, 4, m.weight.shape).float())
                # the reference may empty a layer; the sparsifier's keep-one-group default is tested in tests/test_no_empty_layers.py
                sp = Sparsifier(model, granularity, method, criteria_by_name[crit], layer_type=layer_types(granularity), regrow=regrow,
                                allow_empty_layers=True)
                inits = {n: m.weight.detach().clone() for n, m in sp.layers.items()}
                s1, s2 = sorted(rng.uniform(0, 99.9) for _ in range(2))
                for s in (s1, s2):
                    with torch.no_grad():   # training moves the weights; the removed ones stay zero
                        for n, m in sp.layers.items():
                            m.weight.add_((torch.randint(-1, 2, m.weight.shape) if ties else 0.3 * torch.randn(m.weight.shape)))
                            m.weight.mul_(getattr(m, mask_name))
                    check_step(sp, crit, granularity, method, regrow, s, inits)

def test_crowded_bin_route_is_taken(monkeypatch):
    "With max_candidates=0 the cut resolves the threshold with its second histogram (the route the tests above force)"
    import lth_nbdev.cut as C                                  # the cut lives in its own module
    calls = []
    real = C._first_reaching
    monkeypatch.setattr(C, '_first_reaching', lambda h, k: calls.append(k) or real(h, k))
    monkeypatch.setattr(S, 'max_candidates', 0)
    torch.manual_seed(0)
    Sparsifier(nn.Sequential(nn.Linear(10, 10)), 'weight', 'global', allow_empty_layers=True).sparsify_model(50)
    assert len(calls) == 2                                     # first histogram, then the second one
    calls.clear(); monkeypatch.setattr(S, 'max_candidates', None)
    Sparsifier(nn.Sequential(nn.Linear(10, 10)), 'weight', 'global', allow_empty_layers=True).sparsify_model(50)
    assert len(calls) == 1                                     # by default the few candidates are sorted instead

# --- through the training loop ---------------------------------------------------------------------------------

class Net(nn.Module):
    "Every layer kind the reference knows, in a network that trains on 8x8 digits"
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(6, 12, 3, padding=1, groups=6)
        self.up = nn.ConvTranspose2d(12, 4, 2, stride=2, groups=2)
        self.conv1d = nn.Conv1d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)
    def forward(self, x):
        x = torch.relu(self.depthwise(torch.relu(self.grouped(torch.relu(self.conv(x))))))
        x = torch.relu(self.up(x))                        # (B, 4, 16, 16)
        x = torch.relu(self.conv1d(x.flatten(2)))         # (B, 8, 256)
        return self.fc(x.mean(2))

@pytest.fixture(scope='module')
def small_dls():
    xt, yt, xv, yv = digits_tensors(seed=0)
    return tensor_dls(xt[:256], yt[:256], xv[:64], yv[:64], bs=32, seed=0)

class Before(Callback):
    "Runs before `SparsifyCallback`: the weights at the start of epoch 1 (the rewind point), and the state before each batch"
    order = -1
    def __init__(self, types): self.types = types
    def before_epoch(self):
        if self.epoch == 1: self.rewind = {n: m.weight.detach().clone() for n, m in self.layers().items()}
    def before_batch(self):
        if self.training: self.state = ({n: m.weight.detach().clone() for n, m in self.layers().items()},
                                        {n: getattr(m, mask_name).clone() for n, m in self.layers().items()})
    def layers(self): return {n: m for n, m in self.learn.model.named_modules() if isinstance(m, self.types)}

class After(Callback):
    "Runs after `SparsifyCallback`: whenever it pruned, the new masks must be the reference's"
    order = 1
    def __init__(self, before, sp_cb, crit, granularity, method): self.before, self.sp_cb, self.args, self.checked = before, sp_cb, (crit, granularity, method), 0
    def before_batch(self):
        if not self.training or self.sp_cb.target <= getattr(self, 'seen', 0): return
        self.seen = self.sp_cb.target
        crit, granularity, method = self.args
        layers = self.before.layers()
        weights, old = self.before.state
        want = reference_masks(layers, weights, self.before.rewind, old, 100 * self.sp_cb.target, crit, granularity, method, False)
        for n, m in layers.items():
            assert torch.equal(getattr(m, mask_name), want[n]), n
            assert torch.equal(m.weight.detach(), self.before.rewind[n] * want[n]), n   # and rewound
        self.checked += 1

@pytest.mark.parametrize('granularity, method', [('weight', 'local'), ('weight', 'global'), ('channel', 'global'), ('filter', 'local')])
@pytest.mark.parametrize('crit', INIT_BASED)
def test_callback_with_rewinding_matches_reference(small_dls, crit, granularity, method):
    "Init-based criteria compare against the rewind point (epoch 1), not the weights the fit started from"
    torch.manual_seed(0)
    learn = Learner(small_dls, Net())
    types = layer_types(granularity)
    sp_cb = SparsifyCallback(60, granularity, method, crit, iterative, start_epoch=2, lth=True, rewind_epoch=1,
                             layer_type=types, verbose=False, sparsity_column=False, allow_empty_layers=True)
    before = Before(types)
    after = After(before, sp_cb, crit, granularity, method)
    with learn.no_bar(), learn.no_logging(): learn.fit(5, 1e-2, cbs=[sp_cb, before, after])
    assert after.checked == 3                                   # the three steps of `iterative`

@pytest.mark.parametrize('crit, granularity', [(c, 'weight' if i % 2 == 0 else 'filter') for i, c in enumerate(INIT_BASED)])
def test_find_ticket_matches_reference(small_dls, crit, granularity):
    "Each round's masks: the reference's, from the weights the previous round ended with and the rewind point (epoch 1)"
    ended, rewind = [], {}
    class Probe(Callback):
        def before_epoch(self):
            if not rewind and self.epoch == 1: rewind.update({n: m.weight.detach().clone() for n, m in layers.items()})
    def fit(learn, epochs, lr, cbs):
        learn.fit(epochs, 1e-2, cbs=list(cbs if isinstance(cbs, (list, tuple)) else [cbs]) + [Probe()])
        ended.append({n: m.weight.detach().clone() for n, m in layers.items()})
    torch.manual_seed(0)
    learn = Learner(small_dls, Net())
    types = layer_types(granularity)
    layers = {n: m for n, m in learn.model.named_modules() if isinstance(m, types)}
    with learn.no_bar(), learn.no_logging():
        search = find_ticket(learn, rounds=2, epochs=2, rewind_epoch=1, granularity=granularity, criteria=crit, layer_type=types,
                             fit=fit, verbose=False)
    for r in (1, 2):
        old = {n: search.masks[r - 1][n] for n in layers}
        want = reference_masks(layers, ended[r - 1], rewind, old, search.sparsities[r - 1], crit, granularity, 'global', False)
        for n in layers: assert torch.equal(search.masks[r][n], want[n]), (r, n)
