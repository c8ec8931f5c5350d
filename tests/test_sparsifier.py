"Properties of the sparsifier: exact targets on random architectures, agreement with torch.nn.utils.prune, no regrowth."
import copy, math, sys
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
    assert removed(sp) == min(round(sparsity / 100 * n), n - len(sp.layers))   # exact, unless that would empty a layer
    for m in sp.layers.values(): assert (m.weight[~getattr(m, mask_name)] == 0).all() and getattr(m, mask_name).any()

@settings(max_examples=40, deadline=None)
@given(data=st.data(), s1=st.floats(0, 99), s2=st.floats(0, 99), seed=st.integers(0, 2**16))
def test_local_weight_exact_and_never_regrows(data, s1, s2, seed):
    lo, hi = sorted((s1, s2))
    torch.manual_seed(seed)
    sp = Sparsifier(random_model(data.draw), 'weight', 'local', small_final, layer_type=all_types)
    sp.sparsify_model(lo); before = {n: k.clone() for n, k in sp.masks.items()}
    sp.sparsify_model(hi)
    for n, k in sp.masks.items():
        assert int((~k).sum()) == min(round(hi / 100 * k.numel()), k.numel() - 1)   # a layer keeps one weight at least
        assert not (k & ~before[n]).any()

@settings(max_examples=40, deadline=None)
@given(data=st.data(), sparsity=st.floats(0, 99), seed=st.integers(0, 2**16),
       gran=st.sampled_from(['kernel', 'filter', 'channel']))
def test_global_structured_within_one_group(data, sparsity, seed, gran):
    "Global structured pruning removes whole groups, within half a group of the target (which groups: tests/test_reference.py)"
    torch.manual_seed(seed)
    model = random_model(data.draw)
    convs = (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d)
    if not any(isinstance(m, convs) for m in model): model.append(nn.Conv2d(3, 4, 3))
    sp = Sparsifier(model, gran, 'global', large_final, layer_type=convs, allow_empty_layers=True)   # the unconstrained cut
    sp.sparsify_model(sparsity)
    n = sum(m.weight.numel() for m in sp.layers.values())
    largest_group = max(m.weight.numel() // sp._group_scores(name, m).numel() for name, m in sp.layers.items())
    assert abs(removed(sp) - sparsity / 100 * n) <= largest_group / 2 + 1e-9
    for name, m in sp.layers.items():   # each group wholly kept or wholly removed
        k, dims = getattr(m, mask_name).reshape(sp.views[name]), sp.dims[name]
        assert torch.equal(k.all(dim=dims, keepdim=True), k.any(dim=dims, keepdim=True))

def set_weights(layer, values):
    with torch.no_grad(): layer.weight.copy_(torch.as_tensor(values, dtype=torch.float32).view(layer.weight.shape))

def test_row_and_column_remove_the_weakest_rows_and_columns():
    lin = nn.Linear(3, 4)                                        # weight (4 outputs, 3 inputs)
    w = torch.tensor([[1., 1., 9.], [5., 5., 9.], [0., 0., 9.], [2., 3., 9.]])
    set_weights(lin, w)
    sp = Sparsifier(nn.Sequential(lin), 'row', 'local')
    sp.sparsify_model(50)                                        # 2 of 4 rows: the means are 11/3, 19/3, 3, 14/3
    assert sp.masks['0'].all(1).tolist() == [False, True, False, True] and sp.masks['0'].any(1).tolist() == [False, True, False, True]
    set_weights(lin, w)
    sp = Sparsifier(nn.Sequential(nn.Linear(3, 4)), 'column', 'local'); set_weights(sp.layers['0'], w)
    sp.sparsify_model(60)                                        # round(0.6 * 3) = 2 of 3 columns: means 2, 2.25, 9
    assert sp.masks['0'].all(0).tolist() == [False, False, True] and sp.masks['0'].any(0).tolist() == [False, False, True]
    assert (sp.layers['0'].weight[:, :2] == 0).all() and (sp.layers['0'].weight[:, 2] == 9).all()

def test_grouped_conv_filters_and_channels():
    "ConvTranspose2d(4, 6, groups=2): 6 filters (one per output channel), 4 channels; the weakest go"
    ct = nn.ConvTranspose2d(4, 6, 1, groups=2)                   # weight (4 in, 3 out per group, 1, 1)
    # output channel o = 3 * group + column; its weights are rows 2*group, 2*group+1 of column o % 3
    w = torch.tensor([[1., 8., 3.], [1., 8., 3.], [6., 2., 7.], [6., 2., 7.]])
    sp = Sparsifier(nn.Sequential(copy.deepcopy(ct)), 'filter', 'local', layer_type=nn.ConvTranspose2d); set_weights(sp.layers['0'], w)
    sp.sparsify_model(50)                                        # filters' means: 1, 8, 3, 6, 2, 7: outputs 0, 4, 2 go
    k = sp.masks['0'].view(4, 3)
    assert k.tolist() == [[False, True, False], [False, True, False], [True, False, True], [True, False, True]]
    sp = Sparsifier(nn.Sequential(copy.deepcopy(ct)), 'channel', 'local', layer_type=nn.ConvTranspose2d)
    set_weights(sp.layers['0'], [[1., 1., 1.], [4., 4., 4.], [2., 2., 2.], [3., 3., 3.]])
    sp.sparsify_model(50)                                        # channels 0 and 2 go, each with the 3 outputs of its group
    assert sp.masks['0'].view(4, 3).all(1).tolist() == [False, True, False, True]
    assert sp.masks['0'].view(4, 3).any(1).tolist() == [False, True, False, True]

def test_depthwise_conv_channels_are_not_one_group():
    "A depthwise Conv2d(4, 8, groups=4) has 4 channels of two filters each; local 50% removes two of them"
    dw = nn.Conv2d(4, 8, 3, groups=4)
    sp = Sparsifier(nn.Sequential(dw), 'channel', 'local')
    set_weights(dw, torch.tensor([5., 5., 1., 1., 7., 7., 2., 2.]).view(8, 1, 1, 1).expand(8, 1, 3, 3))
    sp.sparsify_model(50)
    assert sp.masks['0'].view(4, 18).all(1).tolist() == [True, False, True, False]
    assert sp.masks['0'].view(4, 18).any(1).tolist() == [True, False, True, False]
    sp = Sparsifier(nn.Sequential(nn.Conv2d(4, 8, 3, groups=4)), 'filter', 'local')
    set_weights(sp.layers['0'], torch.arange(8.).view(8, 1, 1, 1).expand(8, 1, 3, 3))
    sp.sparsify_model(25)
    assert sp.masks['0'].view(8, 9).any(1).tolist() == [False, False] + [True] * 6

def test_layers_smaller_than_one_unit_lose_nothing():
    "The target of each layer rounds to whole units: below half a unit nothing goes, above it one unit does"
    one = nn.Sequential(nn.Linear(1, 1))
    sp = Sparsifier(one, 'weight', 'local', allow_empty_layers=True); sp.sparsify_model(40)
    assert sp.masks['0'].all() and one[0].weight.item() != 0
    sp.sparsify_model(60)
    assert not sp.masks['0'].any() and one[0].weight.item() == 0
    rows = nn.Sequential(nn.Linear(5, 1), nn.Linear(5, 2))          # 1 row and 2 rows
    sp = Sparsifier(rows, 'row', 'local', allow_empty_layers=True); sp.sparsify_model(40)   # round(0.4) = 0 rows, round(0.8) = 1 row
    assert sp.masks['0'].all() and int((~sp.masks['1']).sum()) == 5
    tiny = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 40, 1))   # 9 weights in one filter, 40 in 40 filters
    with torch.no_grad(): tiny[0].weight.fill_(0.01); tiny[1].weight.fill_(1.)
    sp = Sparsifier(tiny, 'filter', 'global', allow_empty_layers=True)
    sp.sparsify_model(5)     # target 2.45 weights: removing the weakest filter (9 weights) is further from it than removing none
    assert sp.masks['0'].all() and sp.masks['1'].all()
    sp.sparsify_model(16)    # target 7.84 weights: 9 is the closest count
    assert not sp.masks['0'].any() and sp.masks['1'].all()

def test_regrow_brings_back_weights_whose_score_rose():
    torch.manual_seed(0)
    for regrow in (False, True):
        lin = nn.Linear(10, 10); sp = Sparsifier(nn.Sequential(lin), 'weight', 'local', large_final, regrow=regrow)
        sp.sparsify_model(50)
        gone = (~sp.masks['0']).nonzero()[:5]
        with torch.no_grad(): lin.weight[gone[:, 0], gone[:, 1]] = 100.   # what a user's write (or another criterion) can do
        sp.sparsify_model(50)
        back = sp.masks['0'][gone[:, 0], gone[:, 1]]
        assert back.all() if regrow else not back.any()
        assert int((~sp.masks['0']).sum()) == 50                     # exactly 50% either way
        assert (lin.weight[~sp.masks['0']] == 0).all()

class TinyLM(nn.Module):
    def __init__(self, tie=True):
        super().__init__()
        self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
        if tie: self.head.weight = self.embed.weight

def test_tied_weights_are_refused_naming_both_modules():
    lm = TinyLM()
    emb = lm.embed.weight.detach().clone()
    with pytest.raises(ValueError, match=r"layers 'head' and 'embed' share one weight tensor \(tied weights\); 'embed' \(Embedding\) is not pruned, "
                                         r"and a mask on 'head' would zero its entries too: untie them, or leave 'head' out of layer_type"):
        Sparsifier(lm)
    assert not hasattr(lm.head, mask_name) and torch.equal(lm.embed.weight, emb)   # nothing attached, nothing zeroed
    with pytest.raises(ValueError, match=r"layers 'embed' and 'head' share one weight tensor \(tied weights\); prune only one of them"):
        Sparsifier(lm, layer_type=(nn.Embedding, nn.Linear))
    shared = TinyLM(tie=False)
    shared.head.weight = nn.Parameter(shared.embed.weight.data)   # two Parameters over one storage: tied all the same
    with pytest.raises(ValueError, match=r"layers 'head' and 'embed' share one weight tensor"): Sparsifier(shared)
    Sparsifier(TinyLM(tie=False)).sparsify_model(50)               # untied: fine
    with pytest.raises(ValueError, match=r"layers 'embed' and 'head' share one weight tensor"):   # ...from either side
        Sparsifier(TinyLM(), layer_type=nn.Embedding)

def test_a_tied_layer_after_an_untied_one_is_still_found():
    "Every pruned layer is checked, not only those before the first untied one"
    class Pre(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.lm = nn.Linear(4, 4), TinyLM()
    with pytest.raises(ValueError, match=r"layers 'lm.head' and 'lm.embed' share one weight tensor"): Sparsifier(Pre())

def test_meta_layers_of_one_shape_are_not_called_tied():
    "On the meta device every parameter's address is 0: layers of one shape there share an address, not a tensor"
    with torch.device('meta'): m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    assert m[0].weight.data_ptr() == m[2].weight.data_ptr()
    assert list(Sparsifier(m).layers) == ['0', '2']

@pytest.mark.parametrize('seed', range(5))
def test_global_large_final_matches_torch_prune(seed):
    from torchvision.models import resnet18
    torch.manual_seed(seed)
    a = resnet18(num_classes=10); b = copy.deepcopy(a)
    Sparsifier(a, 'weight', 'global', large_final, layer_type=(nn.Conv2d, nn.Linear)).sparsify_model(50)
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

def test_sparsity_report_and_print_sparsity(capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 5))
    sp = Sparsifier(model, 'weight', 'local', layer_type=(nn.Conv2d, nn.Linear))
    sp.sparsify_model(25)                                          # round(4.5) = 4 of 18 and 10 of 40 weights
    with torch.no_grad(): model[3].weight[0, :3] = 0                 # zeros are counted in the weights: 3 more, if not pruned
    extra = int(sp.masks['3'][0, :3].sum())
    r = sp.sparsity_report()
    assert r.drop(columns='sparsity').to_dict('list') == dict(layer=['0', '3'], type=['Conv2d', 'Linear'], shape=[(2, 1, 3, 3), (5, 8)],
                                                             params=[18, 40], zeros=[4, 10 + extra])
    assert r.sparsity.tolist() == pytest.approx([100 * 4 / 18, 100 * (10 + extra) / 40])
    sp.print_sparsity()
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f'Sparsity in Conv2d and Linear layers: {100 * (14 + extra) / 58:.2f}%'
    assert out[1].split() == ['0', 'Conv2d', '(2,', '1,', '3,', '3)', '18', '4', '22.22%']
    assert out[0].split() == ['layer', 'type', 'shape', 'params', 'zeros', 'sparsity']

def test_detach_mask_removes_only_its_own_hooks():
    from lth_nbdev.sparsifier import attach_mask, detach_mask, _fill_missing_mask
    lin = nn.Linear(3, 3)
    detach_mask(lin)                                               # nothing attached: nothing to do
    seen = []
    lin._register_load_state_dict_pre_hook(lambda *a: seen.append(1))   # a user's hook, kept
    attach_mask(lin, torch.tensor([[True, False, True]] * 3))
    assert sum(getattr(h, 'hook', None) is _fill_missing_mask for h in lin._load_state_dict_pre_hooks.values()) == 1
    detach_mask(lin)
    assert not hasattr(lin, mask_name) and not hasattr(lin, '_lth_post_hook')
    assert [getattr(h, 'hook', None) is _fill_missing_mask for h in lin._load_state_dict_pre_hooks.values()] == [False]
    w = torch.ones(3, 3)
    lin.load_state_dict({'weight': w, 'bias': torch.zeros(3)})    # loads plainly: no mask re-applied, the user's hook ran
    assert torch.equal(lin.weight.detach(), w) and seen == [1]

def test_a_bare_layer_is_a_model_too():
    "The layer's name is '' and its weight's state-dict key is 'weight': init weights from a state dict work the same"
    from lth_nbdev.sparsifier import weight_key
    assert (weight_key(''), weight_key('0'), weight_key('a.b')) == ('weight', '0.weight', 'a.b.weight')
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    sp = Sparsifier(lin, 'weight', 'local', criteria_by_name['movement'])
    init = {k: v.clone() for k, v in lin.state_dict().items() if k != mask_name}
    with torch.no_grad(): lin.weight.add_(torch.randn(4, 4))
    moved = (lin.weight.detach() - init['weight']).abs()
    sp.save_init_from(init)
    sp.sparsify_model(50)
    assert list(sp.masks) == [''] and torch.equal(sp.masks[''].flatten(), moved.flatten() >= moved.flatten().sort().values[8])

@pytest.mark.parametrize('method', ['local', 'global'])
def test_weight_targets_round_half_to_even(method):
    "The number removed is Python's round(s/100 * n): 3.5 -> 4 and 2.5 -> 2, in new_masks as in sparsify_model"
    for sparsity, removed in ((35, 4), (25, 2)):
        model = nn.Sequential(nn.Linear(5, 2, bias=False))         # 10 weights
        set_weights(model[0], torch.arange(1., 11.))
        sp = Sparsifier(model, 'weight', method)
        assert int((~sp.new_masks(sparsity)['0']).sum()) == removed
        sp.sparsify_model(sparsity)
        assert int((~sp.masks['0']).sum()) == removed and sp.masks['0'].flatten()[:removed].sum() == 0

def test_a_mask_buffer_removed_by_hand_leaves_loading_alone():
    from lth_nbdev.sparsifier import attach_mask
    lin = nn.Linear(2, 2)
    attach_mask(lin, torch.tensor([[True, False], [False, True]]))
    del lin._buffers[mask_name]                                    # the hooks are still there, the mask is not
    state = {'weight': torch.ones(2, 2), 'bias': torch.zeros(2)}
    lin.load_state_dict(state)
    assert torch.equal(lin.weight.detach(), torch.ones(2, 2)) and mask_name not in lin.state_dict()

def small_cnn(): return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

def test_step_masks_follow_the_masks_and_reuse_their_copies():
    "The per-step multiply equals a multiply by the bool masks, reuses its float copies, and remakes them on any change"
    torch.manual_seed(4)
    m4 = small_cnn(); sp4 = Sparsifier(m4, 'weight', 'local', large_final, layer_type=(nn.Conv2d, nn.Linear))
    sp4.apply_masks(); assert sp4.step_masks.weights == []              # nothing removed yet: no copy, no multiply
    sp4.sparsify_model(40)
    with torch.no_grad(): sp4.layers['6'].weight.fill_(1.); getattr(sp4.layers['6'], mask_name).fill_(True)   # one layer unpruned
    def scramble():
        with torch.no_grad():
            for m in sp4.layers.values(): m.weight.add_(torch.randn_like(m.weight))
        return {n: m.weight.detach() * getattr(m, mask_name) for n, m in sp4.layers.items()}
    def check_applied(ref):
        sp4.apply_masks()
        for n, m in sp4.layers.items(): assert torch.equal(m.weight.detach(), ref[n])
    check_applied(scramble())
    assert len(sp4.step_masks.factors) == 2 and sp4.step_masks.factors[0].dtype == torch.float32   # the unpruned layer: no copy
    first = sp4.step_masks.factors[0]
    check_applied(scramble()); assert sp4.step_masks.factors[0] is first          # masks unchanged: copies reused
    k0 = getattr(sp4.layers['0'], mask_name); k0[0, 0, 0, 0] = not bool(k0[0, 0, 0, 0])   # a user's in-place write
    check_applied(scramble()); assert sp4.step_masks.factors[0] is first          # seen, the copy refreshed in place
    assert torch.equal(first, k0.float())
    m4.double()                                                                  # the copies follow the weights' dtype
    check_applied(scramble()); assert sp4.step_masks.factors[0].dtype == torch.float64
    first = sp4.step_masks.factors[0]
    m4._apply(lambda t: t.clone())   # what moving to another device does: new buffers (and new tensors behind the parameters)
    check_applied(scramble()); assert sp4.step_masks._held[0][1] is getattr(sp4.layers['0'], mask_name)   # the new buffers followed
    for m in sp4.layers.values(): m._parameters['weight'] = nn.Parameter(m.weight.detach().clone())   # new weights, same masks
    check_applied(scramble()); assert sp4.step_masks.weights[0] is sp4.layers['0'].weight
    sp4.step_masks.clear(); assert sp4.step_masks.factors == [] and sp4.step_masks.weights == []

def test_the_weight_cut_streams_its_scores_through_one_buffer(monkeypatch):
    "Built-in criteria score slice by slice into a reused buffer (`into`); nothing holds the whole model's scores"
    import lth_nbdev.sparsifier as S
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 10))
    monkeypatch.setattr(S, 'chunk_size', 64)
    calls, full = [], []
    crit = criteria_by_name['magnitude_increase']
    real_into = crit.into
    monkeypatch.setattr(crit, 'into', lambda wf, wi, o: calls.append((o.data_ptr(), o.numel())) or real_into(wf, wi, o))
    sp = Sparsifier(model, 'weight', 'global', crit)
    real_scores = Sparsifier._layer_scores
    monkeypatch.setattr(Sparsifier, '_layer_scores', lambda self, n, m, start=None, *a, **k: (full.append(n) if start is None else None) or real_scores(self, n, m, start, *a, **k))
    with torch.no_grad():
        for m in model: m.weight.add_(torch.randn_like(m.weight))
    sp.sparsify_model(50)
    assert full == [] and len(calls) >= 2 * (600 + 300) // 64 and max(n for _, n in calls) == 64
    assert len({p for p, _ in calls}) <= max(1, torch.get_num_threads())   # one buffer (one per thread where the cut runs on threads)

def test_user_criteria_get_the_init_weights():
    "A user's function is given the init weights too (it may read them), on the weight path as on the structured one"
    torch.manual_seed(0)
    for gran in ('weight', 'row'):
        lin = nn.Linear(6, 4); sp = Sparsifier(nn.Sequential(lin), gran, 'local', lambda wf, wi: (wf - wi).abs())
        init = lin.weight.detach().clone()
        with torch.no_grad(): lin.weight.add_(torch.randn(4, 6))
        keep = sp.new_masks(50)['0']
        ref = Sparsifier(nn.Sequential(copy.deepcopy(lin)), gran, 'local', criteria_by_name['movement'])
        ref.save_init({'0': init})
        assert torch.equal(keep, ref.new_masks(50)['0'])

@pytest.mark.parametrize('granularity,method,max_candidates', [('weight', 'local', None), ('weight', 'global', None), ('weight', 'global', 1),
                                                                ('row', 'local', None), ('row', 'global', None)])
def test_every_tensor_is_made_on_the_model_device(granularity, method, max_candidates, monkeypatch):
    "Nothing is allocated on the default device: with 'meta' as the default (as a GPU model under a CPU default, or the reverse), a CPU model prunes as usual"
    import lth_nbdev.sparsifier as S, lth_nbdev.cut as C
    monkeypatch.setattr(S, 'max_candidates', max_candidates)          # 1: the crowded-bin route (a second histogram)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6))
    other = copy.deepcopy(model)
    ref = Sparsifier(other, granularity, method); ref.sparsify_model(40); ref_new = ref.new_masks(60)
    sp = Sparsifier(model, granularity, method)
    scores, group_scores, sizes = torch.arange(6.), torch.tensor([3., 1., 2.]), torch.tensor([2, 2, 2])
    with torch.device('meta'):
        sp.sparsify_model(40); new = sp.new_masks(60); sp.apply_masks()
        keep = C.lowest_k_masks([scores], 2)[0]
        groups = C.lowest_groups_mask(group_scores, sizes, 2.)
    assert keep.device.type == 'cpu' and keep.tolist() == [False, False] + [True] * 4
    assert groups.device.type == 'cpu' and groups.tolist() == [True, False, True]
    for n in ref.masks:
        assert torch.equal(sp.masks[n], ref.masks[n]) and torch.equal(new[n], ref_new[n])
        assert torch.equal(sp.layers[n].weight, ref.layers[n].weight)

def test_step_masks_see_a_mask_buffer_replaced_by_another_tensor():
    "A mask replaced by a new tensor (as moving the model to a device does) is seen even if neither was ever written in place"
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    sp = Sparsifier(lin)
    sp.apply_masks(); assert sp.step_masks.weights == []            # all kept: nothing to multiply
    new = torch.tensor([[True, False, True, False]] * 3)              # a fresh tensor: the same _version as the old one
    assert new._version == getattr(lin, mask_name)._version
    setattr(lin, mask_name, new)
    w = lin.weight.detach().clone()
    sp.apply_masks()
    assert torch.equal(lin.weight.detach(), w * new)

@pytest.mark.parametrize('crit', ['large_final', 'user'])
def test_only_kept_weights_are_ranked_and_checked(crit):
    "A NaN or infinite score at an already-removed weight is ignored (it is not ranked); at a kept one it is refused"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 4))
    sp = Sparsifier(model, 'weight', 'global', large_final if crit == 'large_final' else (lambda wf, wi: wf.abs()))
    sp.sparsify_model(50)
    ref = sp.new_masks(70)
    gone = ~getattr(model[0], mask_name)
    bad = torch.full((int(gone.sum()),), math.nan); bad[::2] = math.inf
    with torch.no_grad(): model[0].weight[gone] = bad
    assert all(torch.equal(k, ref[n]) for n, k in sp.new_masks(70).items())
    with torch.no_grad(): model[0].weight[gone] = 0.
    kept = getattr(model[1], mask_name).nonzero()[0].tolist()
    with torch.no_grad(): model[1].weight[tuple(kept)] = math.nan
    with pytest.raises(ValueError, match=r"^criteria returned 1 NaN or infinite score\(s\) for 1; scores must be finite$"): sp.new_masks(70)

def test_channels_last_weights_prune_as_contiguous_ones():
    "Weights in another memory format (`learn.to_channelslast()`) have no flat view: they take the new_masks route, to the same masks"
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3))
    b = copy.deepcopy(a).to(memory_format=torch.channels_last)
    assert not b[0].weight.is_contiguous()
    for method in ('local', 'global'):
        sa, sb = Sparsifier(a, 'weight', method), Sparsifier(b, 'weight', method)
        sa.sparsify_model(30 if method == 'local' else 60); sb.sparsify_model(30 if method == 'local' else 60)
        for n in sa.layers:
            assert torch.equal(sb.masks[n], sa.masks[n]) and torch.equal(sb.layers[n].weight, sa.layers[n].weight)
        assert b[0].weight.is_contiguous(memory_format=torch.channels_last)

def test_weight_pruning_is_one_cut_in_place(monkeypatch):
    "On the weight path, with contiguous weights, the cut writes the masks and zeroes the weights itself: no second set of masks, no second pass"
    def refuse(*a, **k): raise AssertionError('not on this path')
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.Linear(8, 4))
    sp = Sparsifier(model, 'weight', 'global')
    monkeypatch.setattr(Sparsifier, 'new_masks', refuse); monkeypatch.setattr(Sparsifier, '_zero_pruned', refuse)
    sp.sparsify_model(50)
    assert removed(sp) == 56 and all(bool((m.weight[~getattr(m, mask_name)] == 0).all()) for m in model)

def test_init_weights_follow_the_weights_to_their_device():
    "The init weights are taken where the weights were; scored after the model moved ('meta' stands in for a GPU), they move too"
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    sp = Sparsifier(nn.Sequential(lin), 'weight', 'local', movement)
    lin.to('meta')
    assert sp.init_weights['0'].device.type == 'cpu'
    s = sp._layer_scores('0', lin, check=False)
    assert s.device.type == 'meta' and s.shape == (2, 3)

def test_save_init_copies_live_weights_and_shares_snapshots():
    "Handed the live weights (a model's state_dict), save_init copies them; handed a snapshot (the rewind point), it shares it"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    sp = Sparsifier(model, 'weight', 'local', movement)
    sp.save_init_from(model.state_dict())                              # tensors sharing the parameters' storage
    before = model[0].weight.detach().clone()
    with torch.no_grad(): model[0].weight.add_(1.)
    assert torch.equal(sp.init_weights['0'], before)                  # a copy: it did not move with the weights
    snapshot = {'0.weight': model[0].weight.detach().clone(), '0.bias': model[0].bias.detach().clone()}
    sp.save_init_from(snapshot)
    assert sp.init_weights['0'].data_ptr() == snapshot['0.weight'].data_ptr()   # shared: no second copy of the rewind point

def test_attach_mask_again_copies_into_the_buffer_it_has():
    "A second attach_mask writes into the layer's own buffer (the caller's tensor is not adopted) and adds no second hook"
    from lth_nbdev.sparsifier import attach_mask
    lin = nn.Linear(3, 2)
    attach_mask(lin)
    buf = getattr(lin, mask_name)
    hooks = (len(lin._load_state_dict_pre_hooks), len(lin._load_state_dict_post_hooks))
    k = torch.tensor([[True, False, True], [False, True, True]])
    attach_mask(lin, k)
    assert getattr(lin, mask_name) is buf and torch.equal(buf, k) and buf is not k
    assert (len(lin._load_state_dict_pre_hooks), len(lin._load_state_dict_post_hooks)) == hooks == (1, 1)

def test_attach_mask_stores_a_bool_mask_on_the_weights_device():
    "A mask made elsewhere (a ticket read on the CPU, as 0/1 floats) is stored as bool where the weight is ('meta' stands in for a GPU)"
    from lth_nbdev.sparsifier import attach_mask
    lin = nn.Linear(3, 2, device='meta')
    attach_mask(lin, torch.ones(2, 3))
    assert getattr(lin, mask_name).device.type == 'meta' and getattr(lin, mask_name).dtype == torch.bool

@pytest.mark.parametrize('make, message', [
    (lambda: Sparsifier({'0': nn.Linear(2, 2)}), r"^model must be an nn\.Module, got dict$"),
    (lambda: Sparsifier(nn.Linear(2, 2), method='layerwise'), r"^method='layerwise' is unknown; accepted: 'local', 'global'$"),
    (lambda: Sparsifier(nn.Sequential(nn.ReLU()), layer_type=(nn.Conv2d, nn.Linear)),
     r"^model has no layer of layer_type=\('Conv2d', 'Linear'\) with a weight to prune$"),
])
def test_sparsifier_arguments_refused_with_their_message(make, message):
    with pytest.raises(ValueError, match=message): make()

@pytest.mark.parametrize('n', [0, 1, 7, 8, 9, 15, 16, 17, 64, 1001])
@pytest.mark.parametrize('p', [0., 0.01, 0.3, 1.])
def test_true_positions_is_nonzero(n, p):
    "The word-at-a-time `nonzero` of the cut: the same positions for every length, density and offset (aligned or not)"
    from lth_nbdev.cut import _true_positions
    g = torch.Generator().manual_seed(n)
    b = torch.rand(n + 11, generator=g) < p
    for view in (b[:n], b[8:8 + n], b[3:3 + n], b[5:5 + n].clone()):
        assert torch.equal(_true_positions(view), view.nonzero().squeeze(1)), (n, p, view.storage_offset())
    last = torch.zeros(n + 9, dtype=torch.bool); last[-1] = True    # a True only in the tail past the last whole word
    assert _true_positions(last).tolist() == [n + 8]

def test_compare_is_the_bool_comparison():
    "`_compare` writes `op(c, v)` into its own bool buffer, through an int32 one, for keys of both signs"
    from lth_nbdev.cut import _compare
    c = torch.tensor([-2**31, -5, -1, 0, 1, 4, 5, 6, 2**31 - 1], dtype=torch.int32)
    ws = {}
    for op in (torch.eq, torch.ge, torch.gt):
        for v in (-5, 0, 5, 2**31 - 1):
            got = _compare(op, c, v, ws, 'out')
            assert got.dtype == torch.bool and torch.equal(got, op(c, v)), (op, v)
    ptr = ws['out'].data_ptr()
    assert _compare(torch.eq, c, 1, ws, 'out').data_ptr() == ptr   # the workspace buffer, reused
    # the comparison itself goes into the workspace's int32 buffer 'cmp', made once: the cut's speed rests on it (bench/slice_ops.py)
    assert set(ws) == {'out', 'cmp'} and ws['cmp'].dtype == torch.int32
    ptr = ws['cmp'].data_ptr(); _compare(torch.gt, c, 3, ws, 'inside')
    assert ws['cmp'].data_ptr() == ptr and set(ws) == {'out', 'cmp', 'inside'}

def test_key_slices_plain_form():
    "`KeySlices()` walks its tasks in order on the calling thread, with one workspace, yielding `(j, start, keys, alive)`"
    from lth_nbdev.cut import KeySlices, cut_lowest
    workspaces = []
    def keys(task, ws):
        workspaces.append(ws); j, start, stop = task
        ws[task] = True   # what one slice leaves in the workspace, the next sees
        return torch.arange(start, stop, dtype=torch.int32) + 100 * j, (torch.arange(start, stop) % 2 == 0)
    ks = KeySlices([(0, 0, 3), (0, 3, 5), (1, 0, 2)], keys)
    out = list(ks())
    assert [(j, start) for j, start, _, _ in out] == [(0, 0), (0, 3), (1, 0)]
    assert [k.tolist() for _, _, k, _ in out] == [[0, 1, 2], [3, 4], [100, 101]]
    assert [a.tolist() for *_, a in out] == [[True, False, True], [False, True], [True, False]]
    assert all(ws is workspaces[0] for ws in workspaces) and len(workspaces[0]) == 3
    keep = [torch.empty(5, dtype=torch.bool), torch.empty(2, dtype=torch.bool)]
    cut_lowest(lambda: ks(), 5, keep)   # a plain `key_chunks` callable: the 3 removed entries, then the 2 lowest alive (keys 0 and 2)
    assert [k.tolist() for k in keep] == [[False, False, False, False, True], [True, False]]

def test_top_bits_and_work_reuse_the_workspace():
    "The cut's temporaries live in the workspace: `_top_bits` writes into its int32 'top', `_work` hands the same buffer back"
    from lth_nbdev.cut import _top_bits, _work
    c = torch.tensor([-2**31, -65537, -1, 0, 65535, 65536, 2**31 - 1], dtype=torch.int32)
    ws = {}
    t = _top_bits(c, ws)
    assert torch.equal(t, c >> 16) and set(ws) == {'top'} and t.data_ptr() == ws['top'].data_ptr()
    assert _top_bits(c[:3], ws).data_ptr() == t.data_ptr()            # a smaller slice: the same buffer, its start
    a = _work(ws, 'x', torch.int32, c)
    assert _work(ws, 'x', torch.int32, c).data_ptr() == a.data_ptr()   # the same size: not made again
    assert _work(ws, 'x', torch.int32, torch.zeros(9)).numel() == 9    # larger: grown

def test_true_positions_takes_the_word_path():
    "On a whole number of aligned words, `nonzero` runs on the words and on the words holding a True, never on every entry"
    from torch.overrides import TorchFunctionMode
    from lth_nbdev.cut import _true_positions
    class Calls(TorchFunctionMode):
        def __init__(self): super().__init__(); self.seen = []
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.Tensor.nonzero: self.seen.append((args[0].dtype, args[0].numel()))
            return func(*args, **(kwargs or {}))
    base = torch.zeros(8 + 64, dtype=torch.bool); base[[8 + 3, 8 + 4, 8 + 40]] = True
    for b in (base[8:], base[:64]):   # storage offsets 8 and 0
        with Calls() as calls: got = _true_positions(b)
        assert torch.equal(got, b.nonzero().squeeze(1))
        words = int(b.view(torch.int64).ne(0).sum())
        assert calls.seen == [(torch.int64, 8), (torch.bool, 8 * words)], calls.seen

def test_a_cut_of_nothing():
    "Score tensors with no entries at all: k = 0 gives empty masks; any other k is refused with the range"
    from lth_nbdev.cut import lowest_k_masks
    keep = lowest_k_masks([torch.empty(0), torch.empty(0, 3)], 0)
    assert [(k.dtype, tuple(k.shape)) for k in keep] == [(torch.bool, (0,)), (torch.bool, (0, 3))]
    with pytest.raises(ValueError, match=r"k must be in \[0, 0\], got 1"): lowest_k_masks([torch.empty(0)], 1)

@pytest.mark.parametrize('bits', [0x7F800000, 0x7FC00000, 0xFF800000 - 2**32, 0xFFC00000 - 2**32, 0xFFFF0000 - 2**32],
                         ids=['+inf', '+nan', '-inf', '-nan', '-nan-payload'])
def test_every_non_finite_score_is_refused(bits):
    "A score of either infinity or any NaN, whatever its sign and payload, stops the global cut with the checker's message"
    # the cut's first histogram is where they are seen: +inf and NaN keys in its top bins, -inf and negative NaNs
    # (their keys spread over bins 1 to 128 by payload) in its bottom ones
    def scores_with_one_bad(w, init):
        s = w.abs().clone(); s.view(-1).view(torch.int32)[5] = bits
        return s
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3))
    with pytest.raises(ValueError, match='NaN or infinite'):
        Sparsifier(model, 'weight', 'global', scores_with_one_bad).sparsify_model(50)

def test_crowded_bin_counts_stay_exact_past_float32():
    "The histograms count in int64: a bin of more than 2^24 tied keys (where float32 counts stop being exact) still loses exactly k"
    from lth_nbdev.cut import lowest_k_masks
    n = 2**24 + 1                                    # n copies of 1.0, then 5 of the next float up: one top bin, two low bins
    s = torch.ones(n + 5); s[n:] = torch.nextafter(torch.tensor(1.), torch.tensor(2.))
    keep = lowest_k_masks([s], n + 1)[0]            # all the 1.0s, then the first of the 5
    assert int((~keep).sum()) == n + 1 and not keep[:n + 1].any() and bool(keep[n + 1:].all())

@pytest.mark.parametrize('granularity,method', [('weight', 'global'), ('weight', 'local'), ('row', 'local'), ('row', 'global')])
@pytest.mark.parametrize('sync_free', [None, True])
def test_capped_warning_points_at_the_callers_line(granularity, method, sync_free):
    "The warning that a cut stopped short of emptying a layer names the user's line, not one inside the library"
    import warnings, lth_nbdev.cut as cut
    torch.manual_seed(0)
    sp = Sparsifier(nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2)), granularity, method)
    cut.sync_free = sync_free
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            sp.sparsify_model(99.99); line = sys._getframe().f_lineno
            sp.sparsify_layer('0', 99.99); line2 = sys._getframe().f_lineno
    finally: cut.sync_free = None
    assert w and all('would empty a layer' in str(x.message) for x in w)
    assert {(x.filename, x.lineno) for x in w} == {(__file__, line), (__file__, line2)}

def test_help_shows_the_parameter_docs():
    import pydoc
    text = pydoc.render_doc(Sparsifier, renderer=pydoc.plaintext)
    for doc in ("the network to prune", "let a cut remove every group of a layer", "keep a multiple of `round_to` groups"):
        assert doc in text
