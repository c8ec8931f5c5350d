"slim_model: outputs equal to the masked model's (conv+BN, ResNet-18, a concatenation), save/load/export, bad input, callback and search."
import copy, io, os, subprocess, sys, textwrap
import pytest, torch, torchvision
from torch import nn
from fastai.learner import Learner
from fastai.metrics import accuracy
from lth_nbdev.all import *
from lth_nbdev.sparsifier import mask_name

def n_params(m): return sum(p.numel() for p in m.parameters())

def max_diff(a, b, x):
    a_mode, b_mode = a.training, b.training
    a.eval(); b.eval()
    with torch.no_grad(): d = float((a(x) - b(x)).abs().max())
    a.train(a_mode); b.train(b_mode)
    return d

def warm_bn(model, x, steps=3):
    "Move BatchNorm's running statistics away from their initial values"
    model.train()
    with torch.no_grad():
        for _ in range(steps): model(x)

def conv_bn_net():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1, bias=True), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))

class TinyDense(nn.Module):
    "A DenseNet-like block: each layer's output concatenated to its input, then a 1x1 transition and a flatten"
    def __init__(self):
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.c1, self.b1 = nn.Conv2d(12, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(20, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(28, 10, 1), nn.BatchNorm2d(10)
        self.fc = nn.Linear(10 * 4, 5)
    def forward(self, x):
        x = torch.relu(self.b0(self.c0(x)))
        x = torch.cat([x, torch.relu(self.b1(self.c1(x)))], 1)
        x = torch.cat([x, torch.relu(self.b2(self.c2(x)))], 1)
        x = torch.relu(self.b3(self.c3(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 2), 1))

def snapshot(model):
    "Everything `slim_model` must leave as it was"
    return ({k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()],
            [p.requires_grad for p in model.parameters()], [len(m._forward_hooks) for m in model.modules()])

def assert_unchanged(model, snap):
    sd, modes, flags, hooks = snapshot(model)
    assert sd.keys() == snap[0].keys() and all(torch.equal(v, snap[0][k]) for k, v in sd.items())
    assert modes == snap[1] and flags == snap[2] and hooks == snap[3]

# ---------------------------------------------------------------- equal outputs

def test_plain_conv_bn_net():
    torch.manual_seed(0)
    net, x = conv_bn_net(), torch.randn(8, 3, 16, 16)
    warm_bn(net, x)
    sp = prune_channels(net, x, 50)
    assert sp.global_sparsity() == 50.
    net.eval()
    slim = slim_model(net, x)
    assert max_diff(net, slim, torch.randn(5, 3, 16, 16)) <= 1e-4
    assert [m.out_channels for m in slim if isinstance(m, nn.Conv2d)] == [8, 16, 16]
    assert slim[-1].in_features == 12 and slim[-1].out_features == 10      # the hidden linear group too; the classes stay
    assert n_params(slim) < 0.35 * n_params(net)

def test_resnet18_random_init():
    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=10), torch.randn(4, 3, 64, 64)
    warm_bn(model, torch.randn(8, 3, 64, 64))
    sp = prune_channels(model, x, 50)
    model.eval()
    slim = slim_model(model, x)
    assert max_diff(model, slim, torch.randn(3, 3, 64, 64)) <= 1e-3
    assert n_params(slim) <= 0.45 * n_params(model)
    assert slim.conv1.out_channels == 32 and slim.layer4[1].conv2.out_channels == 256 and slim.fc.in_features == 256

def test_resnet18_after_sgd_steps_with_masks_kept():
    "A few SGD steps (momentum, weight decay) with the masks re-applied after each: still equal, BatchNorm still zero"
    torch.manual_seed(1)
    model, x = torchvision.models.resnet18(num_classes=10), torch.randn(2, 3, 64, 64)
    sp = ChannelSparsifier(model, x)
    sp.sparsify_model(50)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(4):
        xb, yb = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(); loss.backward(); opt.step(); sp.apply_masks()
    mods = dict(model.named_modules())
    for g, k in zip(sp.groups, sp.keep):
        for n in g.producers():
            m = mods[n]
            if isinstance(m, nn.BatchNorm2d): assert (m.weight[~k] == 0).all(), n
            if getattr(m, 'bias', None) is not None: assert (m.bias[~k] == 0).all(), n
    assert sp.global_sparsity() == 50.
    model.eval()
    slim = slim_model(model, x)
    assert max_diff(model, slim, torch.randn(3, 3, 64, 64)) <= 1e-3

@pytest.mark.parametrize('method', ['local', 'global'])
def test_concatenation_model(method):
    torch.manual_seed(2)
    model, x = TinyDense(), torch.randn(6, 3, 8, 8)
    warm_bn(model, x)
    sp = prune_channels(model, x, 50, method)
    assert sp.global_sparsity() == 50.
    model.eval()
    slim = slim_model(model, x)
    assert max_diff(model, slim, torch.randn(4, 3, 8, 8)) <= 1e-4
    kept = dict(zip([g.root for g in sp.groups], [int(k.sum()) for k in sp.keep]))
    assert slim.c2.in_channels == kept['c0'] + kept['c1']
    assert slim.c3.in_channels == kept['c0'] + kept['c1'] + kept['c2']
    assert slim.fc.in_features == 4 * kept['c3']

def test_nothing_to_remove_gives_an_equal_copy():
    torch.manual_seed(0)
    for model, x in ((torchvision.models.resnet18(num_classes=10), torch.randn(2, 3, 32, 32)), (TinyDense(), torch.randn(2, 3, 8, 8))):
        model.eval()
        out = slim_model(model, x)
        assert out is not model
        assert out.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in out.state_dict().items())
        assert max_diff(model, out, x) == 0.
    masked = TinyDense().eval()                                   # masks attached, all channels kept
    ChannelSparsifier(masked, torch.randn(2, 3, 8, 8))
    out = slim_model(masked, torch.randn(2, 3, 8, 8))
    assert n_params(out) == n_params(masked) and not any(hasattr(m, mask_name) for m in out.modules())

def test_masked_model_unchanged_and_train_mode_kept():
    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=10), torch.randn(2, 3, 32, 32)
    prune_channels(model, x, 50)
    snap = snapshot(model)
    slim = slim_model(model, x)
    assert_unchanged(model, snap)
    assert slim.training and slim.layer1[0].bn1.training          # the copy keeps the model's mode

# ---------------------------------------------------------------- save, load, export

def test_save_load_without_lth_nbdev_and_export(tmp_path):
    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=10), torch.randn(2, 3, 64, 64)
    prune_channels(model, x, 50)
    model.eval()
    slim = slim_model(model, x)
    torch.save(slim, tmp_path / 'slim.pt')
    torch.save(x, tmp_path / 'x.pt')
    with torch.no_grad(): torch.save(slim(x), tmp_path / 'y.pt')
    back = torch.load(tmp_path / 'slim.pt', weights_only=False)
    assert max_diff(back, slim, x) == 0.
    ep = torch.export.export(slim, (x,))
    torch.export.save(ep, tmp_path / 'slim.pt2')
    with torch.no_grad(): assert float((ep.module()(x) - slim(x)).abs().max()) <= 1e-5
    # a fresh process in which lth_nbdev and torch_pruning cannot be imported loads and runs both files
    script = textwrap.dedent(f"""
        import sys
        sys.modules['lth_nbdev'] = None; sys.modules['torch_pruning'] = None
        import torch
        d = {str(tmp_path)!r}
        x, y = torch.load(d + '/x.pt'), torch.load(d + '/y.pt')
        m = torch.load(d + '/slim.pt', weights_only=False).eval()
        with torch.no_grad(): a = float((m(x) - y).abs().max())
        b = float((torch.export.load(d + '/slim.pt2').module()(x) - y).abs().max())
        mods = {{type(l).__module__.split('.')[0] for l in m.modules()}}
        print(a, b, sorted(mods))
        """)
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert r.returncode == 0, r.stderr
    a, b, mods = r.stdout.split(maxsplit=2)
    assert float(a) == 0. and float(b) <= 1e-5
    assert mods.strip() == "['torch', 'torchvision']"

# ---------------------------------------------------------------- the groups and the sparsifier

def test_resnet18_groups():
    model = torchvision.models.resnet18(num_classes=10)
    groups = channel_groups(model, torch.randn(1, 3, 32, 32))
    assert len(groups) == 12 and sum(g.size for g in groups) == 2880
    res = {g.root: g for g in groups}
    assert set(res['layer4.0.downsample.0'].producers()) >= {'layer4.0.conv2', 'layer4.1.conv2', 'layer4.0.downsample.1'}
    assert 'fc' in res['layer4.0.downsample.0'].consumers()
    assert not any('fc' in g.producers() for g in groups)

def test_sparsifier_masks_only_grow_and_remove_leaves_plain_zeros():
    torch.manual_seed(0)
    model, x = TinyDense(), torch.randn(2, 3, 8, 8)
    sp = ChannelSparsifier(model, x)
    sp.sparsify_model(25); k25 = sp.keep
    sp.sparsify_model(50); k50 = sp.keep
    assert all(bool((b <= a).all()) for a, b in zip(k25, k50))    # removed channels stay removed
    before = {n: m.clone() for n, m in sp.masks.items()}
    new = sp.new_masks(75)                                         # computed, not applied
    assert all(torch.equal(before[n], k) for n, k in sp.masks.items()) and any(not torch.equal(new[n], before[n]) for n in new)
    sp.remove()
    assert not any(hasattr(m, mask_name) or hasattr(m, bias_mask_name) for m in model.modules())
    assert (model.b1.bias[~k50[[g.root for g in sp.groups].index('c1')]] == 0).all()

# ---------------------------------------------------------------- bad input: a ValueError naming what is wrong, model unchanged

class Detached(nn.Module):
    def __init__(self): super().__init__(); self.c, self.b = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    def forward(self, x): return self.b(self.c(x)).detach()

class NotTensors(nn.Module):
    def __init__(self): super().__init__(); self.c = nn.Conv2d(3, 4, 3)
    def forward(self, x): return str(self.c(x).shape)

class ChannelSoftmax(nn.Module):
    "A softmax across channels: a removed channel's zero still counts in the others' normalization"
    def __init__(self):
        super().__init__()
        self.c0, self.b0, self.c1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3, padding=1)
    def forward(self, x): return self.c1(torch.softmax(self.b0(self.c0(x)), 1))

def _unstructured():
    m = torchvision.models.resnet18(num_classes=10); Sparsifier(m, 'weight').sparsify_model(50); return m
def _kernel():
    m = conv_bn_net(); Sparsifier(m, 'kernel', layer_type=nn.Conv2d).sparsify_model(50); return m
def _uncoupled():
    m = torchvision.models.resnet18(num_classes=10); Sparsifier(m, 'filter', layer_type=nn.Conv2d).sparsify_model(50); return m
def _bn_not_zeroed():
    m = conv_bn_net(); Sparsifier(m, 'filter', layer_type=nn.Conv2d).sparsify_model(50); return m
def _shift_restored():
    m = conv_bn_net(); prune_channels(m, torch.randn(2, 3, 16, 16), 50)
    with torch.no_grad(): m[1].bias.fill_(0.5)                    # the BatchNorm shift brought back by hand
    return m
def _softmax():
    m = ChannelSoftmax(); prune_channels(m, torch.randn(2, 3, 8, 8), 50); return m

x16, x32, x8 = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 8, 8)
bad_cases = {
    'untraceable (detached output)': (lambda: Detached(), x8, "cannot be traced"),
    'untraceable (output not tensors)': (lambda: NotTensors(), x8, "cannot be traced"),
    'unstructured masks': (_unstructured, x32, "mask of layer 'conv1' is not channel-structured"),
    'kernel masks': (_kernel, x16, "mask of layer '0' is not channel-structured"),
    'filters not removed from coupled layers': (_uncoupled, x32, "not channel-structured across coupled layers"),
    'BatchNorm not zeroed': (_bn_not_zeroed, x16, r"are masked, but \d+\.bias is not zero there"),
    'BatchNorm shift restored': (_shift_restored, x16, r"but 1\.bias is not zero there"),
    'example_input of the wrong shape': (conv_bn_net, torch.randn(2, 1, 16, 16), r"example_input of shape \(2, 1, 16, 16\) does not fit"),
    'example_input of the wrong rank': (lambda: torchvision.models.resnet18(), torch.randn(3, 32), r"example_input of shape \(3, 32\) does not fit"),
    'example_input not a tensor': (conv_bn_net, [[1, 2]], "example_input must be a tensor"),
    'a zero channel that changes the outputs': (_softmax, x8, "changed the outputs"),
}

@pytest.mark.parametrize('case', list(bad_cases))
def test_bad_input(case):
    make, x, message = bad_cases[case]
    torch.manual_seed(0)
    model = make()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=message): slim_model(model, x)
    assert_unchanged(model, snap)

def test_bad_input_to_the_other_entry_points():
    with pytest.raises(ValueError, match="model must be an nn.Module"): slim_model(lambda x: x, x8)
    with pytest.raises(ValueError, match="cannot be traced"): channel_groups(Detached(), x8)
    with pytest.raises(ValueError, match="does not fit"): ChannelSparsifier(conv_bn_net(), torch.randn(2, 5, 16, 16))
    with pytest.raises(ValueError, match="needs example_input"): ChannelSparsifier(conv_bn_net())
    with pytest.raises(ValueError, match="no group of coupled channels"): ChannelSparsifier(nn.Linear(3, 2), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 100\)"): prune_channels(conv_bn_net(), x16, 100)
    with pytest.raises(ValueError, match="method='layer' is unknown"): prune_channels(conv_bn_net(), x16, 50, 'layer')

# ---------------------------------------------------------------- the post's callback and the search, with `ChannelGroups` as the granularity
# SparsifyCallback and find_ticket build their sparsifier with `build_sparsifier`: a granularity object with a `sparsifier`
# method (`ChannelGroups(x)`) builds a `ChannelSparsifier`, and the search trains each round with its `keep_masks` callback.

@pytest.fixture(scope='module')
def dls(): return digits_dls(bs=128, seed=0)

def test_sparsify_callback_lth_rewind_then_slim(dls):
    x = dls.valid.one_batch()[0]
    torch.manual_seed(0)
    learn = Learner(dls, digits_cnn(), metrics=accuracy)
    cb = SparsifyCallback(50, ChannelGroups(x[:4]), 'local', large_final, iterative, start_epoch=2, lth=True, rewind_epoch=1, verbose=False)
    with learn.no_bar(): learn.fit(4, 1e-2, cbs=cb)
    assert isinstance(cb.sparsifier, ChannelSparsifier) and cb.current_sparsity() == 50.
    preds, targs = learn.get_preds()
    model = learn.model.eval()
    slim = slim_model(model, x)
    with torch.no_grad(): slim_preds = torch.cat([slim(xb) for xb, _ in dls.valid])
    assert float((preds.log() - slim_preds.log_softmax(1)).abs().max()) <= 1e-3
    assert torch.equal(preds.argmax(1), slim_preds.argmax(1))      # the same accuracy, image by image
    assert n_params(slim) < 0.5 * n_params(model)

def test_sparsify_callback_prints_the_granularity(dls, capsys):
    x = dls.valid.one_batch()[0]
    learn = Learner(dls, digits_cnn(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=SparsifyCallback(50, ChannelGroups(x[:2]), sparsity_column=False))
    assert 'Pruning of channel groups until a sparsity of 50%' in capsys.readouterr().out

def test_find_ticket_rounds_then_slim(dls):
    x = dls.valid.one_batch()[0]
    torch.manual_seed(0)
    learn = Learner(dls, digits_cnn(), metrics=accuracy)
    with learn.no_bar():
        search = find_ticket(learn, sparsities=[30, 50], epochs=1, fit='fit', lr=1e-2, granularity=ChannelGroups(x[:4]), method='local', verbose=False)
    assert isinstance(search.sparsifier, ChannelSparsifier) and search.sparsifier.global_sparsity() == 50.
    assert search.keep_masks is KeepChannelMasks
    model = learn.model.eval()
    slim = slim_model(model, x)
    assert max_diff(model, slim, x) <= 1e-3

def test_help_shows_the_parameters_of_prune_channels_and_slim_model():
    for f, doc in ((prune_channels, 'percent of the channels to remove'), (slim_model, 'a batch it accepts, to trace it')):
        assert 'Parameters:' in f.__doc__ and doc in f.__doc__
