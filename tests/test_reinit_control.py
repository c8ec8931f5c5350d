"""The random re-initialization control draws from the distribution the network was built with (issue 32).

For four constructors (torchvision's resnet18, fastai's xresnet18 and create_cnn_model, the digits CNN, a plain
nn.Sequential), each re-initialized conv/linear weight must have a standard deviation within 5% of the same layer of a
freshly built network (not of the trained one), differ from W0, and keep its mask; directly and through
`find_ticket(controls=('random_reinit',))`, with a model factory and with the fallback (W0's entries shuffled)."""
import copy, functools
import pytest, torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.losses import CrossEntropyLossFlat
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.vision.models.xresnet import xresnet18
from fastai.vision.learner import create_cnn_model
import lth_nbdev.search as search_mod
from lth_nbdev.controls import random_reinit
from lth_nbdev.search import find_ticket
from lth_nbdev.sparsifier import Sparsifier, mask_name
from lth_nbdev.data import digits_cnn, digits_dls

constructors = {
    'resnet18': (lambda: tv_resnet18(num_classes=10), 3, 16),       # (constructor, input channels, image side: small, for speed)
    'xresnet18': (lambda: xresnet18(n_out=10), 3, 16),
    'create_cnn_model': (lambda: create_cnn_model(tv_resnet18, 10, pretrained=False), 3, 16),
    'digits_cnn': (digits_cnn, 1, 8),
    'sequential': (lambda: nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 14 * 14, 10)), 3, 16),
}
small = ('digits_cnn', 'sequential')      # cheap to build: average over more draws, so that small layers' sampling noise stays far below 5%

def draws(name): return 24 if name in small else 3

def prunable(model): return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

@functools.lru_cache(maxsize=None)
def population_std(name:str, seed0:int=10_000)->dict:
    "Each conv/linear layer's weight std, averaged over `draws(name)` freshly built networks of constructor `name`"
    make, n, tot = constructors[name][0], draws(name), {}
    for i in range(n):
        torch.manual_seed(seed0 + i)
        for k, m in prunable(make()).items(): tot[k] = tot.get(k, 0.) + m.weight.std().item() / n
    return tot

def kept_std(m)->float:
    "The std of a layer's kept weights (a random mask is independent of fresh values, so their spread is the layer's)"
    mask = getattr(m, mask_name, None)
    w = m.weight.detach()
    return (w[mask] if mask is not None else w).std().item()

def check_scale(stds:dict, want:dict, what:str):
    for k, v in want.items():
        assert abs(stds[k] / v - 1) < 0.05, f"{what}: layer {k!r} has std {stds[k]:.4g}, a fresh network's {v:.4g}"

@pytest.mark.parametrize('name', list(constructors))
def test_direct_factory_matches_fresh_scale_and_keeps_masks(name):
    make, _, _ = constructors[name]
    torch.manual_seed(0); w0 = make()
    sp = Sparsifier(w0, 'weight', 'global', layer_type=(nn.Conv2d, nn.Linear)); sp.sparsify_model(50)
    masks = {n: k.clone() for n, k in sp.masks.items()}
    want, got = population_std(name), {}
    for i in range(draws(name)):
        r = random_reinit(copy.deepcopy(w0), seed=1000 + i, make_model=make)   # W0 was built under seed 0
        for k, m in prunable(r).items(): got[k] = got.get(k, 0.) + kept_std(m) / draws(name)
        if i == 0:
            for k, m in prunable(r).items():
                assert torch.equal(getattr(m, mask_name), masks[k]), f"{k}: mask changed"
                assert (m.weight[~masks[k]] == 0).all(), f"{k}: a removed weight is not zero"
                assert not torch.equal(m.weight, prunable(w0)[k].weight), f"{k}: weights equal W0"
    check_scale(got, want, f"{name}, make_model")

@pytest.mark.parametrize('name', list(constructors))
def test_direct_init_fallback_matches_fresh_scale(name):
    make, _, _ = constructors[name]
    # a shuffle keeps each tensor's values: one network is enough for the big constructors
    n = draws(name) if name in small else 1
    want, got = population_std(name), {}
    for i in range(n):
        torch.manual_seed(100 + i); w0 = make()
        init = copy.deepcopy(w0.state_dict())
        r = random_reinit(w0, seed=i, init=init)
        for k, m in prunable(r).items():
            got[k] = got.get(k, 0.) + m.weight.std().item() / n
            assert not torch.equal(m.weight, init[f"{k}.weight"]), f"{k}: weights equal W0"
    check_scale(got, want, f"{name}, init")

def test_old_reset_parameters_scale_is_what_the_test_catches():
    "The control as it was (each layer's reset_parameters) fails the 5% check on torchvision's resnet18"
    make = constructors['resnet18'][0]
    torch.manual_seed(0); m = make()
    for mod in m.modules():
        if hasattr(mod, 'reset_parameters'): mod.reset_parameters()
    with pytest.raises(AssertionError, match='fresh network'):
        check_scale({k: v.weight.std().item() for k, v in prunable(m).items()}, population_std('resnet18'), 'reset_parameters')

def tiny_dls(channels:int, size:int, n:int=16, bs:int=8, seed:int=0)->DataLoaders:
    "Random images and labels: enough for a search to run a round and a control"
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2 * n, channels, size, size, generator=g), torch.randint(0, 10, (2 * n,), generator=g)
    ds = list(zip(x, y))
    return DataLoaders(DataLoader(ds[:n], bs=bs, shuffle=True, drop_last=True), DataLoader(ds[n:], bs=bs))

# the two fastai constructors train a ResNet-18 for three short fits each: the quick set keeps torchvision's, CI runs all
_find_ticket_cases = [pytest.param(n, marks=pytest.mark.slow) if n in ('xresnet18', 'create_cnn_model') else n for n in constructors]

@pytest.mark.parametrize('with_factory', [True, False])
@pytest.mark.parametrize('name', _find_ticket_cases)
def test_through_find_ticket(name, with_factory, monkeypatch):
    make, channels, size = constructors[name]
    dls = digits_dls(bs=128, seed=0) if name == 'digits_cnn' else tiny_dls(channels, size)
    torch.manual_seed(0)
    learn = Learner(dls, make(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    w0 = {k: v.clone() for k, v in learn.model.state_dict().items()}
    seen = []
    real = search_mod.random_reinit
    def spy(model, seed, make_model=None, init=None):
        out = real(model, seed, make_model=make_model, init=init)
        seen.append(({k: kept_std(m) for k, m in prunable(out).items()},
                     {k: (m.weight.detach().clone(), getattr(m, mask_name).clone()) for k, m in prunable(out).items()}))
        return out
    monkeypatch.setattr(search_mod, 'random_reinit', spy)
    with learn.no_bar(), learn.no_logging():
        s = find_ticket(learn, rounds=1, epochs=1, fraction=0.5, controls=('random_reinit',), layer_type=(nn.Conv2d, nn.Linear),
                        make_model=make if with_factory else None, verbose=False)
    assert len(seen) == 1 and list(s.table.arm) == ['dense', 'ticket', 'random_reinit']
    stds, state = seen[0]
    check_scale(stds, population_std(name) if with_factory else
                {k: w0[f"{k}.weight"].std().item() for k in stds}, f"{name} through find_ticket")
    for k, (w, mask) in state.items():
        assert torch.equal(mask.cpu(), s.masks[1][k]), f"{k}: the control's mask is not the ticket's"
        assert (w[~mask] == 0).all()
        assert not torch.equal(w, w0[f"{k}.weight"] * mask), f"{k}: the control starts from W0"

def test_bad_inputs_name_the_parameter():
    net = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match='make_model'): random_reinit(net, seed=0)
    with pytest.raises(ValueError, match='make_model must be a function'): random_reinit(net, seed=0, make_model=3)
    with pytest.raises(ValueError, match=r"'0.weight' of shape"): random_reinit(net, seed=0, make_model=lambda: nn.Sequential(nn.Linear(3, 4)))
    with pytest.raises(ValueError, match='lacks'): random_reinit(net, seed=0, init={})
    learn = Learner(digits_dls(bs=128, seed=0), digits_cnn(), metrics=accuracy)
    with pytest.raises(ValueError, match='make_model must be a function'): find_ticket(learn, rounds=1, controls=('random_reinit',), make_model='resnet18')

def test_results_made_with_the_old_control_are_left_out_and_run_again(tmp_path):
    "collect_results skips a random_reinit result without the fixed control's mark, and the runner treats it as not done"
    import numpy as np
    from lth_nbdev.experiments import write_result, collect_results, reinit_source, unit_done, Unit
    from lth_nbdev.stats import summarize
    c = np.array([1, 0, 1, 1], bool)
    base = dict(summarize(c, experiment='lottery', seed=0, image_size=8, epochs=5, epoch_accuracy=[], seconds_per_epoch=1., torch='x',
                          threads=1), correct=c)
    (tmp_path/'seed0').mkdir()
    path = tmp_path/'seed0'/'random_reinit.json'
    write_result(path, dict(base, arm='random_reinit'))
    write_result(tmp_path/'seed0'/'dense.json', dict(base, arm='dense'))
    unit, said = Unit('lottery', 'random_reinit', 0, 5, path), []
    assert set(collect_results(tmp_path)) == {('dense', 0)}
    assert not unit_done(unit, log=said.append) and 'old random_reinit' in said[0]
    write_result(path, dict(base, arm='random_reinit', reinit=reinit_source))
    assert set(collect_results(tmp_path)) == {('dense', 0), ('random_reinit', 0)}
    assert unit_done(unit)
