"""Issue 36 in one process: structured tickets on a model on another device than their example (torch's meta device
where there is no GPU), masks that survive SyncBatchNorm (a checkpoint resume and a rewind, both exact), pruned weights
that stay pruned under fastai's non-native fp16, one process printing, and pinned batches on CUDA.
Tests taking `device` run on the CPU and, where a GPU exists, on CUDA too."""
import copy, warnings
import pytest
import torch
from torch import nn
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastai.callback.fp16 import ModelToHalf, NonNativeMixedPrecision, get_master, _copy_state
from fastai.optimizer import SGD
import fastai.callback.progress
from lth_nbdev.data import digits_dls, digits_cnn
from lth_nbdev.criteria import large_final
from lth_nbdev.schedules import iterative, one_shot
from lth_nbdev.callback import SparsifyCallback
from lth_nbdev.sparsifier import mask_name
from lth_nbdev.slim import ChannelGroups, channel_groups, slim_model, bias_mask_name, _run, convert_sync_batchnorm
from lth_nbdev.search import find_ticket, read_checkpoint

devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])

# --- 1. the example follows the model's device

def test_a_meta_model_is_traced_from_a_cpu_example():
    x = torch.randn(2, 1, 8, 8)
    cpu_groups = channel_groups(digits_cnn(), x)
    meta = digits_cnn().to('meta')          # a model on another device than the example (as on a GPU), without a GPU
    groups = channel_groups(meta, x)
    assert [(g.root, g.size, g.layers) for g in groups] == [(g.root, g.size, g.layers) for g in cpu_groups]
    assert _run(meta, (x,))[0].device.type == 'meta'
    sp = ChannelGroups(x).sparsifier(meta)
    assert {k.device.type for k in sp.masks.values()} == {'meta'}

@pytest.mark.parametrize('device', devices + ['meta'])
def test_channel_groups_and_slim_model_take_the_example_where_it_is(device):
    x = torch.randn(2, 1, 8, 8)
    torch.manual_seed(0)
    net = digits_cnn().to(device)
    sp = ChannelGroups(x).sparsifier(net)
    if device == 'meta': return           # no values to cut on the meta device: tracing is what it shows
    sp.sparsify_model(50)
    slim = slim_model(net, x)             # the example stays on the CPU
    with torch.no_grad(): assert torch.allclose(slim.eval()(x.to(device)), net.eval()(x.to(device)), atol=1e-4)

@pytest.mark.parametrize('device', devices)
def test_structured_ticket_from_a_cpu_example_on_the_learner_device(device):
    dls = digits_dls(bs=64, seed=0, device=device, max_images=512)
    x = dls.valid.one_batch()[0][:4].cpu()     # as experiments.structured_unit keeps it
    torch.manual_seed(0)
    learn = Learner(dls, digits_cnn(), opt_func=SGD, lr=0.05)
    cb = SparsifyCallback(50, ChannelGroups(x), 'local', large_final, iterative, start_epoch=1, lth=True, verbose=False, sparsity_column=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, cbs=cb)
    assert abs(cb.current_sparsity() - 50) < 1e-6
    slim = slim_model(learn.model.eval(), x)
    xb = dls.valid.one_batch()[0]
    with torch.no_grad(): assert torch.equal(slim(xb).argmax(1), learn.model(xb).argmax(1))

# --- 3. SyncBatchNorm: masks carried over, the sparsifier pointed at the new modules

class ConvertBatchNorm(Callback):
    "Replace the BatchNorm layers by SyncBatchNorm ones where fastai's DistributedTrainer does (order 11, sync_bn=True on GPUs)"
    order = 11
    def before_fit(self): self.learn.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.learn.model)

def _bn_removed(model):
    "Per BatchNorm layer: (scale, shift) of its removed channels, which must be 0"
    return {n: (m.weight.detach()[~getattr(m, mask_name)], m.bias.detach()[~getattr(m, bias_mask_name)])
            for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}

def _channel_fit(convert):
    dls = digits_dls(bs=64, seed=0, device='cpu', max_images=512)
    x = dls.valid.one_batch()[0][:4]
    torch.manual_seed(0)
    learn = Learner(dls, digits_cnn(), opt_func=SGD, lr=0.05)
    cb = SparsifyCallback(50, ChannelGroups(x), 'local', large_final, iterative, start_epoch=1, lth=True, reset_end=True,
                          verbose=False, sparsity_column=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(3, cbs=[cb] + ([ConvertBatchNorm()] if convert else []))
    return learn, cb

def test_sync_batchnorm_keeps_the_channel_masks_through_a_fit_and_its_rewinds():
    learn, cb = _channel_fit(convert=True)
    net = learn.model
    bns = {n: m for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert len(bns) == 3 and all(type(m) is nn.SyncBatchNorm for m in bns.values())
    mods = dict(net.named_modules())
    assert all(cb.sparsifier.layers[n] is mods[n] for n in cb.sparsifier.layers)        # the sparsifier's modules are current
    assert all(hasattr(m, mask_name) and hasattr(m, bias_mask_name) for m in bns.values())
    removed = _bn_removed(net)
    assert all(w.numel() and not w.any() and not b.any() for w, b in removed.values())   # after the reset_end rewind too
    ref, ref_cb = _channel_fit(convert=False)                                              # a SyncBatchNorm without a group computes as BatchNorm
    for k, v in ref.model.state_dict().items(): assert torch.equal(v, net.state_dict()[k]), k

def _channel_search(ckpt, stop_fit=None):
    from lth_nbdev.search import find_ticket
    class Stop(Exception): pass
    class StopAt(Callback):
        order, fits = 99, 0
        def before_train(self):
            if self.epoch: return
            StopAt.fits += 1                  # counted on the class: the control learners get copies of this callback
            if StopAt.fits == stop_fit: raise Stop('stopped here by the test')
    dls = digits_dls(bs=64, seed=0, device='cpu', max_images=512)
    x = dls.valid.one_batch()[0][:4]
    torch.manual_seed(0)
    learn = Learner(dls, digits_cnn(), opt_func=SGD, lr=0.05, cbs=[ConvertBatchNorm(), StopAt()])   # every fit converts, as distrib_ctx does
    try:
        with learn.no_bar(), learn.no_logging():
            s = find_ticket(learn, rounds=2, epochs=1, lr=0.05, fit='fit', granularity=ChannelGroups(x), method='local',
                            controls=('random_prune',), checkpoint=ckpt, seed=0, verbose=False)
    except Stop: return None
    return learn, s

def test_sync_batchnorm_channel_search_resumes_exactly(tmp_path):
    learn, s = _channel_search(tmp_path/'straight.ckpt')
    bns = [m for m in learn.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(type(m) is nn.SyncBatchNorm and hasattr(m, mask_name) for m in bns)
    assert all(w.numel() and not w.any() and not b.any() for w, b in _bn_removed(learn.model).values())
    assert _channel_search(tmp_path/'stopped.ckpt', stop_fit=4) is None    # dense, round 1, its control, then stopped
    assert read_checkpoint(tmp_path/'stopped.ckpt')['next_round'] == 2
    learn2, s2 = _channel_search(tmp_path/'stopped.ckpt')                   # resumed: the SyncBatchNorm masks were in the checkpoint
    assert s.rows and [{k: v for k, v in r.items() if k != 'seconds'} for r in s.rows] == \
           [{k: v for k, v in r.items() if k != 'seconds'} for r in s2.rows]
    a, b = learn.model.state_dict(), learn2.model.state_dict()
    assert list(a) == list(b)
    for k in a: assert torch.equal(a[k], b[k]), k

def test_convert_sync_batchnorm_keeps_a_tickets_masks():
    from lth_nbdev.slim import prune_channels
    torch.manual_seed(0)
    net = digits_cnn()
    prune_channels(net, torch.randn(2, 1, 8, 8), 50)
    plain = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(net))
    assert not hasattr(plain[1], mask_name)                                 # torch's conversion drops them
    synced = convert_sync_batchnorm(copy.deepcopy(net))
    assert list(synced.state_dict()) == list(net.state_dict())
    with torch.no_grad():
        for m in synced.modules():
            if isinstance(m, nn.SyncBatchNorm): m.weight.fill_(1.); m.bias.fill_(1.)
    synced.load_state_dict(net.state_dict())                                # a rewind
    assert all(not w.any() and not b.any() for w, b in _bn_removed(synced).values())

# --- 6. fastai's non-native fp16: the fp32 master copies are masked too

class CPUNonNative(NonNativeMixedPrecision):
    "fastai's `NonNativeMixedPrecision`, its `before_fit` without the check for a CUDA device (its own lines otherwise): to run it on a CPU"
    def before_fit(self):
        if self.learn.opt is None: self.learn.create_opt()
        self.model_pgs, self.master_pgs = get_master(self.opt, self.flat_master)
        self.old_pgs = self.opt.param_lists
        _copy_state(self.learn.opt, self.model_pgs, self.master_pgs)
        if self.dynamic: self.count = 0

class MasterSpy(Callback):
    "After every step (and the master-to-model copy, order 10): removed weights zero in the model and its masters; at the reset batch, masters = model"
    order = 11
    def __init__(self, sp): self.sp, self.bad, self.reset_checked = sp, 0, False
    def before_batch(self):
        if not self.training or self.train_iter != self.sp.start_iter or not self.sp.lth: return
        mp = next(c for c in self.learn.cbs if isinstance(c, NonNativeMixedPrecision))
        for model_ps, master_ps in zip(mp.model_pgs, mp.master_pgs):
            assert torch.equal(torch.cat([p.detach().float().flatten() for p in model_ps]), torch.cat([m.detach().flatten() for m in master_ps])), 'masters are not the rewound model'
        self.reset_checked = True
    def after_step(self):
        for n, m in self.sp.sparsifier.layers.items(): self.bad += int((m.weight.detach()[~getattr(m, mask_name)] != 0).sum())

@pytest.mark.parametrize('flat_master', [False, True])
@pytest.mark.parametrize('lth', [False, True])
def test_non_native_fp16_keeps_pruned_weights_at_zero(flat_master, lth):
    torch.manual_seed(0)
    learn = Learner(digits_dls(bs=64, seed=0, device='cpu', max_images=512), digits_cnn(), opt_func=SGD, lr=0.05,
                    cbs=[ModelToHalf(), CPUNonNative(flat_master=flat_master)])
    cb = SparsifyCallback(50, 'weight', 'global', large_final, one_shot, start_epoch=1, lth=lth, verbose=False, sparsity_column=False)
    spy = MasterSpy(cb)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, cbs=[cb, spy])
    assert spy.bad == 0 and spy.reset_checked == lth
    zeros = sum(int((m.weight == 0).sum()) for m in cb.sparsifier.layers.values())
    total = sum(m.weight.numel() for m in cb.sparsifier.layers.values())
    assert abs(100 * zeros / total - 50) < 0.01 and abs(cb.current_sparsity() - 50) < 0.01

# --- smaller: one process prints, pinned batches on CUDA

def test_the_callback_prints_on_rank_0_only(monkeypatch, capsys):
    def fit():
        torch.manual_seed(0)
        learn = Learner(digits_dls(bs=64, seed=0, device='cpu', max_images=256), digits_cnn(), opt_func=SGD, lr=0.05)
        with learn.no_bar(), learn.no_logging(): learn.fit(2, cbs=SparsifyCallback(50, start_epoch=1, lth=True, sparsity_column=False))
        return capsys.readouterr().out
    assert 'Final Sparsity: 50.00' in fit()
    monkeypatch.setenv('RANK', '1')      # what torchrun tells the second process (fastai's rank_distrib reads it)
    assert fit() == ''

@pytest.mark.parametrize('device', devices)
def test_batches_are_pinned_for_a_gpu(device):
    dls = digits_dls(bs=64, seed=0, device=device, max_images=256)
    assert dls.train.fake_l.pin_memory == (device == 'cuda') and dls.valid.fake_l.pin_memory == (device == 'cuda')
    x, y = dls.one_batch()
    assert x.device.type == device and y.device.type == device
