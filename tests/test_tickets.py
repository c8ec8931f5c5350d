"""Tickets survive: save/load round trips (dense and compact), permanent export, `torch.nn.utils.prune` both
ways, on torchvision's ResNet-18 and on a model with Linear, Conv1d and ConvTranspose2d layers; truncated
and corrupted files always fail with a clear `ValueError` and leave the target model untouched."""
import os, copy, random
import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torchvision.models import resnet18
from lth_nbdev.sparsifier import Sparsifier, mask_name
from lth_nbdev.callback import model_state
from lth_nbdev.data import digits_cnn
from lth_nbdev.tickets import *
from lth_nbdev.tickets import ticket_signature

class Mixed(nn.Module):
    "Conv1d -> Linear -> ConvTranspose2d: the layer types beyond Conv2d that a ticket must handle"
    def __init__(self):
        super().__init__()
        self.conv1d, self.lin, self.deconv = nn.Conv1d(3, 8, 3, padding=1), nn.Linear(8 * 16, 64), nn.ConvTranspose2d(4, 2, 3, stride=2)
    def forward(self, x):
        h = torch.relu(self.conv1d(x)).flatten(1)
        return self.deconv(torch.relu(self.lin(h)).view(-1, 4, 4, 4))

mixed_types = (nn.Linear, nn.Conv1d, nn.ConvTranspose2d)
MODELS = {
    'resnet18': (lambda: resnet18(num_classes=10), (nn.Conv2d, nn.Linear), lambda: torch.randn(2, 3, 32, 32)),
    'mixed':    (Mixed, mixed_types, lambda: torch.randn(2, 3, 16)),
}

def _pruned(name, sparsity=80., seed=0):
    "A model of `name` with perturbed ('trained') weights pruned globally by magnitude, and its initial weights"
    make, layer_type, _ = MODELS[name]
    torch.manual_seed(seed)
    model = make()
    init = model_state(model)
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn_like(p) * 0.01)
        for m in model.modules():                                     # batch-norm statistics that are not the defaults
            if isinstance(m, nn.BatchNorm2d): m.running_mean.uniform_(-1, 1); m.running_var.uniform_(0.5, 2)
    sp = Sparsifier(model, method='global', layer_type=layer_type)
    sp.sparsify_model(sparsity)
    return model.eval(), init, sp

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "One torch thread: on a busy 2-core machine, oversubscribed threads make the ResNet-18 tests several times slower"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _assert_same_state(a:dict, b:dict):
    assert list(a) == list(b)
    for k in a: assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k

@pytest.fixture(scope='module')
def resnet_case(): return _pruned('resnet18')

@pytest.fixture(scope='module')
def mixed_case(): return _pruned('mixed')

@pytest.fixture(params=['resnet18', 'mixed'])
def case(request, resnet_case, mixed_case):
    return request.param, *(resnet_case if request.param == 'resnet18' else mixed_case)

def _masks(model): return {n: getattr(m, mask_name).clone() for n, m in model.named_modules() if getattr(m, mask_name, None) is not None}

def test_mixed_layer_types_are_pruned(mixed_case):
    model, _, sp = mixed_case
    assert [type(m) for m in sp.layers.values()] == [nn.Conv1d, nn.Linear, nn.ConvTranspose2d]
    assert abs(sp.global_sparsity() - 80) < 0.01

@pytest.mark.parametrize('compact', [False, True])
def test_save_load_round_trip(case, tmp_path, compact):
    name, model, init, sp = case
    make, layer_type, inp = MODELS[name]
    path = save_ticket(model, tmp_path/'t.ticket', compact=compact, rewind_weights=init, meta=dict(seed=0, criterion='large_final'))
    assert [p.name for p in tmp_path.iterdir()] == ['t.ticket']                  # nothing temporary left behind
    fresh = make().eval()
    t = load_ticket(path, fresh)                                                 # the trained ticket
    _assert_same_state(fresh.state_dict(), model.state_dict())                  # masks, weights and buffers, bit for bit
    x = inp(); assert torch.equal(fresh(x), model(x))
    assert t['meta']['seed'] == 0 and t['meta']['compact'] == compact and t['meta']['torch'] == str(torch.__version__)
    assert abs(t['meta']['sparsity'] - 80) < 0.01 and set(t['meta']['layer_sparsity']) == set(sp.layers)
    rewound = make()
    load_ticket(path, rewound, weights='rewind')                                 # W_t * m, ready to retrain
    masks = _masks(model)
    for k, v in rewound.state_dict().items():
        if k.endswith(mask_name): assert torch.equal(v, masks[k[:-len(mask_name) - 1]]), k
        elif k[:-len('.weight')] in masks and k.endswith('.weight'): assert torch.equal(v, init[k] * masks[k[:-len('.weight')]]), k
        else: assert torch.equal(v, init[k]), k
    if not compact: assert all(torch.equal(t['rewind'][k], init[k]) for k in init)   # a dense file keeps all of W_t
    masks_only = make()
    load_ticket(path, masks_only, weights=None)
    for n, k in _masks(masks_only).items(): assert torch.equal(k, masks[n])

def test_compact_matches_dense(mixed_case, tmp_path):
    model, init, _ = mixed_case
    a = read_ticket(save_ticket(model, tmp_path/'d.ticket', rewind_weights=init))
    b = read_ticket(save_ticket(model, tmp_path/'c.ticket', rewind_weights=init, compact=True))
    _assert_same_state(a['trained'], b['trained'])
    _assert_same_state(a['masks'], b['masks'])
    assert (tmp_path/'c.ticket').stat().st_size < (tmp_path/'d.ticket').stat().st_size

def test_make_permanent_loads_into_plain_model(case):
    name, model, _, _ = case
    make, _, inp = MODELS[name]
    m = copy.deepcopy(model)
    x = inp(); y = model(x)
    make_permanent(m)
    assert not any(k.endswith(mask_name) for k in m.state_dict())
    assert all(not mod._load_state_dict_pre_hooks and not mod._load_state_dict_post_hooks for mod in m.modules())
    plain = make().eval()
    plain.load_state_dict(m.state_dict(), strict=True)                         # exactly the plain architecture's keys
    assert torch.equal(plain(x), y)
    masks = _masks(model)
    for n, k in masks.items(): assert torch.equal(dict(plain.named_modules())[n].weight != 0, k & (model.get_submodule(n).weight != 0))

def test_torch_prune_both_ways(case):
    name, model, _, _ = case
    make, _, inp = MODELS[name]
    m = copy.deepcopy(model)
    masks, x = _masks(model), inp()
    y = model(x)
    to_torch_prune(m)
    assert prune.is_pruned(m)
    sd = m.state_dict()
    for n, k in masks.items():
        assert f"{n}.weight_orig" in sd and torch.equal(sd[f"{n}.weight_mask"].bool(), k) and f"{n}.{mask_name}" not in sd
    assert torch.equal(m(x), y)
    back = from_torch_prune(m)
    assert not prune.is_pruned(m)
    assert list(back) == list(masks) and all(torch.equal(back[n], masks[n]) for n in masks)
    _assert_same_state(m.state_dict(), model.state_dict())
    assert torch.equal(m(x), y)

def test_from_torch_prune_of_torch_masks_then_ticket(tmp_path):
    torch.manual_seed(1)
    m = Mixed().eval()
    params = [(m.conv1d, 'weight'), (m.lin, 'weight'), (m.deconv, 'weight')]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.7)
    x = torch.randn(2, 3, 16); y = m(x)
    masks = from_torch_prune(m)
    assert set(masks) == {'conv1d', 'lin', 'deconv'} and torch.equal(m(x), y)
    fresh = Mixed().eval()
    load_ticket(save_ticket(m, tmp_path/'t.ticket', compact=True), fresh)
    assert torch.equal(fresh(x), y)
    test = Mixed(); prune.l1_unstructured(test.lin, 'bias', amount=0.5)
    with pytest.raises(ValueError, match="'lin' has its 'bias' pruned"): from_torch_prune(test)

def _damaged(data:bytes, rng):
    "Yield (description, bytes): cut at many points, and one byte changed at many positions"
    sig_end = len(ticket_signature); head_end = data.index(b'\n', sig_end) + 1
    cuts = sorted({0, 1, sig_end - 1, sig_end, sig_end + 5, head_end - 1, head_end, head_end + 1, len(data) - 1}
                  | set(rng.sample(range(len(data)), 20)))
    for c in cuts: yield f'cut at {c}', data[:c]
    for i in list(range(head_end)) + rng.sample(range(head_end, len(data)), 60):
        b = bytearray(data); b[i] ^= 1 << rng.randrange(8); yield f'bit flip at {i}', bytes(b)
    yield 'appended byte', data + b'\0'

@pytest.mark.parametrize('compact', [False, True])
def test_damaged_files_never_load(mixed_case, tmp_path, compact):
    model, init, _ = mixed_case
    good = save_ticket(model, tmp_path/'good.ticket', compact=compact, rewind_weights=init)
    data, rng = good.read_bytes(), random.Random(0)
    target = Mixed(); before = {k: v.clone() for k, v in target.state_dict().items()}
    bad = tmp_path/'bad.ticket'
    for what, d in _damaged(data, rng):
        bad.write_bytes(d)
        with pytest.raises(ValueError, match=r"ticket file '.*bad\.ticket' (is truncated|is corrupted|is not a lth_nbdev ticket)") as e:
            load_ticket(bad, target)
        _assert_same_state(target.state_dict(), before)                       # the model was not touched
    load_ticket(good, target)                                                  # and the intact file still loads
    _assert_same_state(target.state_dict(), model.state_dict())

def test_mismatched_model_names_first_layer(mixed_case, resnet_case, tmp_path):
    model, init, _ = resnet_case
    path = save_ticket(model, tmp_path/'r.ticket', rewind_weights=init, trained=False)
    other = resnet18(num_classes=7); before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"r\.ticket' does not fit the model: layer 'fc' has weight of shape \(10, 512\) in the file, \(7, 512\)"):
        load_ticket(path, other, weights='rewind')
    _assert_same_state(other.state_dict(), before)
    with pytest.raises(ValueError, match=r"does not fit the model: layer 'conv1d' \(conv1d.weight\) is in the model but not in the file"):
        load_ticket(path, Mixed(), weights='rewind')
    mixed, _, _ = mixed_case
    p2 = save_ticket(mixed, tmp_path/'m.ticket')
    class Wider(Mixed):
        def __init__(self): super().__init__(); self.lin = nn.Linear(8 * 16, 65)
    with pytest.raises(ValueError, match=r"layer 'lin' has weight of shape \(64, 128\) in the file, \(65, 128\) in the model"):
        load_ticket(p2, Wider())
    with pytest.raises(ValueError, match=r"layer 'conv1d' has weight of shape"):
        load_ticket(p2, _conv1d_changed())

def _conv1d_changed():
    m = Mixed(); m.conv1d = nn.Conv1d(3, 8, 5, padding=2); return m

def test_atomic_write_keeps_old_file_on_failure(mixed_case, tmp_path, monkeypatch):
    model, init, _ = mixed_case
    path = save_ticket(model, tmp_path/'t.ticket')
    old = path.read_bytes()
    def boom(fd): raise OSError('disk full (simulated)')
    monkeypatch.setattr(os, 'fsync', boom)
    with pytest.raises(OSError, match='simulated'): save_ticket(model, path, rewind_weights=init)
    monkeypatch.undo()
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ['t.ticket']

def test_checkpoint_sizes_digits():
    model = digits_cnn(); Sparsifier(model, method='global', layer_type=(nn.Conv2d, nn.Linear)).sparsify_model(90)   # the whole model: convolutions and classifier
    s = checkpoint_sizes(model)
    assert abs(s['sparsity'] - 90) < 0.01 and s['compact_bytes'] < s['dense_bytes'] and s['ratio'] < 0.3

def test_search_round_tickets(tmp_path):
    "Save the last and an earlier round of a small find_ticket search, with `ticket_meta`, and load them back"
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from lth_nbdev.data import digits_dls
    from lth_nbdev.search import find_ticket
    torch.manual_seed(0)
    learn = Learner(digits_dls(seed=0), digits_cnn(), loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): search = find_ticket(learn, rounds=2, epochs=1, verbose=False)
    last = save_ticket(learn.model, tmp_path/'last.ticket', rewind_weights=search.rewind_weights, meta=ticket_meta(search))
    first = save_ticket(learn.model, tmp_path/'round1.ticket', masks=search.masks[1], rewind_weights=search.rewind_weights,
                        trained=False, meta=ticket_meta(search, 1))
    m = digits_cnn()
    t = load_ticket(last, m)
    _assert_same_state(m.state_dict(), learn.model.state_dict())
    assert t['meta']['round'] == 2 and t['meta']['criterion'] == 'large_final' and t['meta']['method'] == 'global'
    assert t['meta']['schedule']['sparsities'] == search.sparsities and abs(t['meta']['sparsity'] - search.sparsities[-1]) < 0.01
    t1 = load_ticket(first, digits_cnn(), weights='rewind')
    assert t1['meta']['round'] == 1 and all(torch.equal(t1['masks'][n], k) for n, k in search.masks[1].items())
    with pytest.raises(ValueError, match="holds no trained weights"): load_ticket(first, digits_cnn())
