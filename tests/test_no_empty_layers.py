"""No layer is emptied unless asked (issue #34): global and local cuts at every granularity keep a group in every layer,
the global count stays exact where it can, the user is told where it cannot, and the network's output still depends
on its input. Also: fasterai's default layer types, and the ChannelSparsifier's global mode."""
import warnings
import pytest, torch
from torch import nn
from torchvision.models import resnet18
from lth_nbdev.sparsifier import Sparsifier, mask_name
from lth_nbdev.criteria import large_final, small_final, criteria_by_name
from lth_nbdev.granularity import granularities

def output_depends_on_input(model):
    "Whether the output's gradient with respect to the input is nonzero somewhere"
    model.eval()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()
    return bool((x.grad != 0).any())

def kept_groups(sp):
    return {n: int(sp._group_scores(n, m).isfinite().sum()) for n, m in sp.layers.items()}

@pytest.mark.parametrize('crit', [small_final, large_final])
def test_resnet18_global_filter_70_keeps_every_conv(crit):
    torch.manual_seed(0)
    r = resnet18()
    sp = Sparsifier(r, 'filter', 'global', crit)
    assert set(sp.layers) == {n for n, m in r.named_modules() if isinstance(m, nn.Conv2d)}   # no layer_type: the convolutions
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                    # the target can be met: no warning
        sp.sparsify_model(70)
    assert all(k.any() for k in sp.masks.values())
    assert all(bool(k.flatten(1).any(1).any()) for k in sp.masks.values())
    n = sum(m.weight.numel() for m in sp.layers.values())
    removed = sum(int((~k).sum()) for k in sp.masks.values())
    largest = max(m.weight[0].numel() for m in sp.layers.values())
    assert abs(removed - 0.7 * n) <= largest / 2                          # as close as whole filters allow
    assert output_depends_on_input(r)

def test_resnet18_small_final_empties_layers_only_when_allowed():
    torch.manual_seed(0)
    r = resnet18()
    sp = Sparsifier(r, 'filter', 'global', small_final, allow_empty_layers=True)
    sp.sparsify_model(70)
    assert sum(not k.any() for k in sp.masks.values()) == 15                # the collapse of the issue, 15 of 20
    assert not output_depends_on_input(r)

@pytest.mark.parametrize('sparsity', [90, 99, 99.5])
def test_weight_global_with_a_tiny_layer_exact(sparsity):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 2))
    with torch.no_grad(): net[2].weight.mul_(1e-3)
    sp = Sparsifier(net, 'weight', 'global', large_final)
    with warnings.catch_warnings():
        warnings.simplefilter('error'); sp.sparsify_model(sparsity)
    n = 10200
    assert sum(int((~k).sum()) for k in sp.masks.values()) == round(sparsity / 100 * n)   # exact
    assert all(k.any() for k in sp.masks.values())
    if sparsity <= 99:   # (higher, the head's one weight may read a hidden unit whose inputs are all gone: no layer is empty, yet no path is left)
        x1, x2 = torch.randn(4, 100), torch.randn(4, 100)
        assert not torch.equal(net(x1), net(x2))

def test_weight_global_past_the_possible_warns_and_keeps_one_each():
    net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2))
    sp = Sparsifier(net, 'weight', 'global')
    with pytest.warns(UserWarning, match=r"removing 119 of 120 weights would empty a layer.*removed 118 .*allow_empty_layers=True"):
        sp.sparsify_model(99.5)
    assert [int(k.sum()) for k in sp.masks.values()] == [1, 1]
    sp2 = Sparsifier(nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2)), 'weight', 'global', allow_empty_layers=True)
    sp2.sparsify_model(99.5)
    assert sum(int(k.sum()) for k in sp2.masks.values()) == 1

@pytest.mark.parametrize('granularity', [g for g in granularities(nn.Conv2d(2, 2, 3)) if g != 'weight'])
@pytest.mark.parametrize('method', ['local', 'global'])
def test_every_granularity_keeps_a_group_per_layer(granularity, method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 32, 3), nn.ReLU())
    with torch.no_grad(): net[0].weight.mul_(1e-3)                       # the small layer would go first
    sp = Sparsifier(net, granularity, method, large_final)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); sp.sparsify_model(99)
    assert all(k.any() for k in sp.masks.values()), granularity

def test_local_cap_warns_with_the_layer_name():
    sp = Sparsifier(nn.Sequential(nn.Conv2d(1, 2, 1)), 'filter', 'local')
    with pytest.warns(UserWarning, match=r"layer '0' at 80%"): sp.sparsify_model(80)   # round(1.6) = 2 of 2 filters
    assert int(sp.masks['0'].flatten(1).any(1).sum()) == 1

def test_structured_global_unchanged_when_no_layer_would_empty():
    "Protection changes nothing where no layer would be emptied: the masks equal the unconstrained cut's"
    for seed in range(5):
        torch.manual_seed(seed); a = resnet18(); b = resnet18(); b.load_state_dict(a.state_dict())
        sa, sb = Sparsifier(a, 'filter', 'global', large_final), Sparsifier(b, 'filter', 'global', large_final, allow_empty_layers=True)
        sa.sparsify_model(50); sb.sparsify_model(50)
        assert all(torch.equal(sa.masks[n], sb.masks[n]) for n in sa.layers)

def test_default_layer_type_and_structured_granularities_on_a_cnn_with_a_linear_head():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    for g in ('filter', 'kernel', 'channel', 'column', 'row', 'input_vector', 'shared_kernel', 'vertical_slice'):
        sp = Sparsifier(model, g, 'global')
        assert list(sp.layers) == ['0']
    assert list(Sparsifier(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))).layers) == ['0', '1']   # an MLP: its Linear layers
    with pytest.raises(ValueError, match=r"granularity='filter' does not exist for Linear for layer '4'"):
        Sparsifier(model, 'filter', 'global', layer_type=(nn.Conv2d, nn.Linear))                   # asked for: the error stays

def test_resnet18_callback_filter_global_50_with_its_linear_head():
    "SparsifyCallback(50, 'filter', 'global', large_final, iterative) on resnet18 with its fc head, no layer_type: runs to 50%"
    from fastai.learner import Learner
    from fastai.data.core import DataLoaders
    from fastai.callback.progress import ProgressCallback  # noqa: F401
    from lth_nbdev.callback import SparsifyCallback
    from lth_nbdev.schedules import iterative
    torch.manual_seed(0)
    xs, ys = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    ds = list(zip(xs, ys))
    dls = DataLoaders.from_dsets(ds, ds[:8], bs=8)
    learn = Learner(dls, resnet18(num_classes=10), loss_func=nn.CrossEntropyLoss())
    cb = SparsifyCallback(50, 'filter', 'global', large_final, iterative, verbose=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-3, cbs=cb)
    assert 'fc' not in cb.sparsifier.layers and len(cb.sparsifier.layers) == 20
    assert abs(cb.current_sparsity() - 50) < 1
    assert all(k.any() for k in cb.sparsifier.masks.values())

def test_channel_sparsifier_global_keeps_a_channel_per_group():
    "The same guarantee for slim's ChannelSparsifier in global mode, with small_final (which would empty groups first)"
    from lth_nbdev.slim import ChannelSparsifier
    torch.manual_seed(0)
    r = resnet18(num_classes=10)
    sp = ChannelSparsifier(r, torch.randn(1, 3, 64, 64), 'global', small_final)
    sp.sparsify_model(90)
    assert all(bool(k.any()) for k in sp.keep)
    assert abs(sp.global_sparsity() - 90) < 1                          # the count is still the target's
    assert output_depends_on_input(r)
