"Properties of the sparsifier: exact targets on random architectures, agreement with torch.nn.utils.prune, no regrowth."
import copy, math
import pytest, torch
from torch import nn
import torch.nn.utils.prune as prune
from hypothesis import given, settings, strategies as st, HealthCheck
from lth_nbdev.sparsifier import Sparsifier, mask_name
from lth_nbdev.criteria import large_final, small_final, movement, random, criteria_by_name

def random_model(draw):
    "A bag of random prunable layers (a forward pass is not needed to prune)"
    layers = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(['linear', 'conv2d', 'conv1d', 'convt2d']))
        a, b = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        k = draw(st.integers(1, 3))
        layers.append({'linear': lambda: nn.Linear(a, b), 'conv2d': lambda: nn.Conv2d(a, b, k),
                       'conv1d': lambda: nn.Conv1d(a, b, k), 'convt2d': lambda: nn.ConvTranspose2d(a, b, k)}[kind]())
    return nn.ModuleList(layers)

all_types = (nn.Linear, nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d)

def removed(sp): return sum(int((~m).sum()) for m in sp.masks.values())

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sparsity=st.floats(0, 99.99), seed=st.integers(0, 2**16),
       crit=st.sampled_from(['large_final', 'small_final', 'movement', 'random', 'magnitude_increase']))
def test_global_weight_hits_target_exactly(data, sparsity, seed, crit):
    torch.manual_seed(seed)
    model = random_model(data.draw)
    sp = Sparsifier(model, 'weight', 'global', criteria_by_name[crit], layer_type=all_types)
    with torch.no_grad():
        for m in sp.layers.values(): m.weight.add_(0.01 * torch.randn_like(m.weight))   # init-based criteria see a change
    sp.sparsify_model(sparsity)
    n = sum(m.weight.numel() for m in sp.layers.values())
    assert removed(sp) == round(sparsity / 100 * n)
    for m in sp.layers.values(): assert (m.weight[~getattr(m, mask_name)] == 0).all()

@settings(max_examples=40, deadline=None)
@given(data=st.data(), s1=st.floats(0, 99), s2=st.floats(0, 99), seed=st.integers(0, 2**16))
def test_local_weight_exact_and_never_regrows(data, s1, s2, seed):
    lo, hi = sorted((s1, s2))
    torch.manual_seed(seed)
    sp = Sparsifier(random_model(data.draw), 'weight', 'local', small_final, layer_type=all_types)
    sp.sparsify_model(lo); before = {n: k.clone() for n, k in sp.masks.items()}
    sp.sparsify_model(hi)
    for n, k in sp.masks.items():
        assert int((~k).sum()) == round(hi / 100 * k.numel())
        assert not (k & ~before[n]).any()

@settings(max_examples=40, deadline=None)
@given(data=st.data(), sparsity=st.floats(0, 99), seed=st.integers(0, 2**16),
       gran=st.sampled_from(['kernel', 'filter', 'channel']))
def test_global_structured_within_one_group(data, sparsity, seed, gran):
    torch.manual_seed(seed)
    model = random_model(data.draw)
    convs = (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d)
    if not any(isinstance(m, convs) for m in model): model.append(nn.Conv2d(3, 4, 3))
    sp = Sparsifier(model, gran, 'global', large_final, layer_type=convs)
    sp.sparsify_model(sparsity)
    n = sum(m.weight.numel() for m in sp.layers.values())
    largest_group = max(m.weight.numel() // sp._group_scores(name, m).numel() for name, m in sp.layers.items())
    assert abs(removed(sp) - sparsity / 100 * n) <= largest_group / 2 + 1e-9
    for name, m in sp.layers.items():   # each group wholly kept or wholly removed
        k = getattr(m, mask_name)
        dims = sp.dims[name]
        assert torch.equal(k.all(dim=dims, keepdim=True) | ~k.any(dim=dims, keepdim=True),
                           torch.ones_like(k.all(dim=dims, keepdim=True)))

@pytest.mark.parametrize('seed', range(5))
def test_global_large_final_matches_torch_prune(seed):
    from torchvision.models import resnet18
    torch.manual_seed(seed)
    a = resnet18(num_classes=10); b = copy.deepcopy(a)
    Sparsifier(a, 'weight', 'global', large_final).sparsify_model(50)
    pa = [m for m in a.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    pb = [m for m in b.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured([(m, 'weight') for m in pb], pruning_method=prune.L1Unstructured, amount=0.5)
    for ma, mb in zip(pa, pb):
        assert torch.equal(getattr(ma, mask_name), mb.weight_mask.bool())
        assert torch.equal(ma.weight, mb.weight)

def test_masks_travel_with_state_dict_and_plain_state_dicts_load():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    sp = Sparsifier(a, 'weight', 'global'); sp.sparsify_model(60)
    sd = a.state_dict()
    assert f"0.{mask_name}" in sd
    b = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    Sparsifier(b, 'weight', 'global')
    b.load_state_dict(sd)                                         # masks restored with the model
    for (n, ka), kb in zip(sp.masks.items(), Sparsifier(b).masks.values()): assert torch.equal(ka, kb)
    plain = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).state_dict()
    res = a.load_state_dict(plain)                                 # a plain state dict still loads...
    assert not res.missing_keys and not res.unexpected_keys
    assert sp.global_sparsity() == pytest.approx(100 * round(0.6 * 80) / 80)
    for m in sp.layers.values(): assert (m.weight[~getattr(m, mask_name)] == 0).all()   # ...and is masked

def test_remove_leaves_plain_weights():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    sp = Sparsifier(a, 'weight', 'global'); sp.sparsify_model(50)
    sp.remove()
    assert not any(k.endswith(mask_name) for k in a.state_dict())
    nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).load_state_dict(a.state_dict())
    assert sum(int((m.weight == 0).sum()) for m in (a[0], a[2])) == 40
