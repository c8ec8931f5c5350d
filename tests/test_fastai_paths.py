"Issue 15: SparsifyCallback on the paths a fastai user takes, on an image folder read by fastai's own `ImageDataLoaders`."
import contextlib, io, pickle, re
import pytest, torch
from torch import nn
from PIL import Image
from fastai.vision.all import ImageDataLoaders, Resize, Learner, accuracy, params, load_learner, PILImage
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback   # learn.no_bar
import fastai.callback.channelslast, fastai.callback.fp16   # learn.to_channelslast, to_bf16, to_fp16
from lth_nbdev.all import *
from lth_nbdev.sparsifier import mask_name

@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    "train/ and valid/, two classes of 16x16 PNGs (reddish and bluish, with noise)"
    path = tmp_path_factory.mktemp('images')
    g = torch.Generator().manual_seed(0)
    for split, n in (('train', 24), ('valid', 8)):
        for c, (r, b) in (('red', (200, 40)), ('blue', (40, 200))):
            (path/split/c).mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(0, 50, (16, 16, 3), generator=g)
                a = (torch.tensor([r, 90, b]) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(a).save(path/split/c/f'{i}.png')
    return path

@pytest.fixture(scope='module')
def dls(image_folder):
    return ImageDataLoaders.from_folder(image_folder, train='train', valid='valid', item_tfms=Resize(16), bs=8,
                                        num_workers=0, seed=0)

def small_cnn():
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2)))

def make_learner(dls, seed=0, **kw):
    torch.manual_seed(seed)
    learn = Learner(dls, small_cnn(), metrics=accuracy, splitter=lambda m: [params(m[0]), params(m[1])], **kw)
    learn.create_opt()
    return learn

def ticket_cb(**kw):
    return SparsifyCallback(50, 'weight', 'global', large_final, **{'schedule': iterative, 'start_epoch': 1, 'lth': True, 'verbose': False, **kw})

def check_pruned(learn, cb, target=50.):
    "The callback's sparsity is the target, and every masked weight of the model is exactly zero"
    assert cb.current_sparsity() == pytest.approx(target, abs=0.2)
    for m in learn.model.modules():
        mask = getattr(m, mask_name, None)
        if mask is not None: assert not m.weight[~mask].any()

def run(f):
    out = io.StringIO()
    with contextlib.redirect_stdout(out): f()
    return out.getvalue()

def test_channels_last(dls):
    "to_channelslast(): the weights are not contiguous, the cut still reaches the target and the model stays channels_last"
    learn = make_learner(dls).to_channelslast()
    cb = ticket_cb()
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3, cbs=cb)
    conv = learn.model[0][0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    check_pruned(learn, cb)

def test_bf16(dls):
    "to_bf16(): lth=True reaches the target sparsity"
    learn = make_learner(dls).to_bf16()
    cb = ticket_cb()
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3, cbs=cb)
    check_pruned(learn, cb)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='to_fp16 needs CUDA')
def test_fp16(dls):
    "to_fp16() on a GPU: lth=True reaches the target sparsity"
    learn = make_learner(dls).to_fp16()
    cb = ticket_cb()
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3, cbs=cb)
    check_pruned(learn, cb)

def test_fit_one_cycle(dls):
    "fit_one_cycle with lth: the target is reached, and the learning-rate schedule is NOT restarted at the resets (documented)"
    learn = make_learner(dls)
    cb = ticket_cb(schedule=one_shot)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 1e-2, cbs=cb)
    check_pruned(learn, cb)
    plain = make_learner(dls)
    with plain.no_bar(), plain.no_logging(): plain.fit_one_cycle(3, 1e-2)
    assert learn.recorder.lrs == plain.recorder.lrs   # the one cycle runs once, through the reset at epoch 1
    n = len(dls.train)
    assert learn.recorder.lrs[n] > learn.recorder.lrs[0]   # after the reset the lr is not back at its start

def test_fine_tune(dls):
    "fine_tune: nothing is pruned in the frozen fit, start_epoch counts the epochs of the unfrozen fit, the target is reached by the end"
    learn = make_learner(dls)
    seen = []
    cb = SparsifyCallback(50, 'weight', 'global', large_final, iterative, start_epoch=1)
    class Watch(Callback):
        order = 1
        def after_epoch(self): seen.append((self.learn.opt.frozen_idx, round(cb.current_sparsity(), 2)))
    with learn.no_bar(), learn.no_logging(): out = run(lambda: learn.fine_tune(2, cbs=[cb, Watch()]))
    assert 'The model is frozen: nothing is pruned in this fit' in out
    assert seen[0] == (1, 0.)           # the frozen epoch: not pruned
    assert seen[1] == (0, 0.)           # epoch 0 of the unfrozen fit: before start_epoch
    assert seen[2][0] == 0 and seen[2][1] == pytest.approx(50, abs=0.2)
    check_pruned(learn, cb)

def test_fine_tune_lth(dls):
    "fine_tune with lth=True: rewind point and resets in the unfrozen fit, the target is reached"
    learn = make_learner(dls)
    cb = ticket_cb(verbose=True)
    with learn.no_bar(), learn.no_logging(): out = run(lambda: learn.fine_tune(2, cbs=cb))
    assert 'Saving Weights at epoch 0' in out and 'Resetting Weights to their epoch 0 values' in out
    check_pruned(learn, cb)

def test_fine_tune_start_epoch_out_of_reach(dls):
    "A start_epoch that the unfrozen fit does not reach: a ValueError naming start_epoch"
    learn = make_learner(dls)
    with learn.no_bar(), learn.no_logging(), pytest.raises(ValueError, match=re.escape('start_epoch (2) must be < the number of epochs (2)')):
        run(lambda: learn.fine_tune(2, cbs=ticket_cb(start_epoch=2)))

def test_export_predict(dls, tmp_path):
    "A Learner made with cbs=SparsifyCallback exports without the fit's state; load_learner -> predict works with the callback attached"
    cb = ticket_cb()
    learn = make_learner(dls, cbs=cb)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
    assert cb.rewind_weights is not None and cb.sparsifier is not None   # the fit's state is there to read after fit
    state = cb.__getstate__()
    for k in ('sparsifier', 'net', 'rewind_weights', 'rewind_opt', '_metric'): assert k not in state
    learn.export(tmp_path/'export.pkl')
    state.pop('learn')   # pickled with the Learner anyway
    n_weights = 4 * sum(p.numel() for p in learn.model.parameters())
    assert len(pickle.dumps(state)) < n_weights / 4   # the settings only: the rewind weights alone are a copy of the model
    loaded = load_learner(tmp_path/'export.pkl')
    cb2 = next(c for c in loaded.cbs if isinstance(c, SparsifyCallback))
    assert cb2.sparsifier is None and cb2.rewind_weights is None and cb2.rewind_opt is None and cb2.end_sparsity == 50
    img = PILImage.create(sorted((dls.path/'valid'/'red').glob('*.png'))[0])
    label, idx, probs = loaded.predict(img)
    want = learn.predict(img)
    assert label == want[0] and torch.allclose(probs, want[2], atol=1e-6)
    for m in loaded.model.modules():   # the masks travel with the model, and the pruned weights stay zero
        mask = getattr(m, mask_name, None)
        if mask is not None: assert not m.weight[~mask].any()

def test_controls_inherit_callbacks_and_precision(dls):
    "find_ticket's controls train with copies of the Learner's callbacks: the user's, to_bf16's MixedPrecision, to_channelslast's"
    from fastai.callback.fp16 import MixedPrecision, AMPMode
    seen = []
    class Spy(Callback):
        order = 20
        def before_train(self):   # once a fit (every round trains 1 epoch); get_preds runs no before_train
            mp = [c for c in self.learn.cbs if isinstance(c, MixedPrecision)]
            seen.append(dict(learner=id(self.learn), spy=self, amp=[c.amp_mode for c in mp],
                             channels_last=self.learn.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)))
    spy = Spy()
    learn = make_learner(dls, cbs=spy).to_bf16().to_channelslast()
    with learn.no_bar(), learn.no_logging():
        s = find_ticket(learn, rounds=1, epochs=1, controls=('random_reinit', 'random_prune'), verbose=False)
    assert list(s.table.arm) == ['dense', 'ticket', 'random_reinit', 'random_prune']
    assert len(seen) == 4 and len({x['learner'] for x in seen}) == 3     # dense and ticket in `learn`, one Learner per control
    for x in seen: assert x['amp'] == [AMPMode.BF16] and x['channels_last']
    assert seen[0]['spy'] is spy and seen[2]['spy'] is not spy and seen[3]['spy'] is not spy   # copies: `spy` stays bound to `learn`
    assert spy.learn is learn

def test_search_on_rank_1_is_silent_and_writes_no_checkpoint(dls, tmp_path, monkeypatch, capsys):
    "Under several processes only rank 0 prints and writes the checkpoint (fastai's rank_distrib)"
    import lth_nbdev.search as search
    monkeypatch.setattr(search, 'rank_distrib', lambda: 1)
    learn = make_learner(dls)
    with learn.no_bar(), learn.no_logging(): s = find_ticket(learn, rounds=1, epochs=1, checkpoint=tmp_path/'c.ckpt')
    assert len(s.table) == 2 and not (tmp_path/'c.ckpt').exists() and capsys.readouterr().out == ''
    monkeypatch.setattr(search, 'rank_distrib', lambda: 0)
    learn = make_learner(dls)
    with learn.no_bar(), learn.no_logging(): find_ticket(learn, rounds=1, epochs=1, checkpoint=tmp_path/'c.ckpt')
    assert (tmp_path/'c.ckpt').exists() and 'Round 1 ticket' in capsys.readouterr().out

def test_search_with_a_wrapped_model(dls):
    "A trainer that wraps the model during fit (as DistributedTrainer does): the rewind point has the model's own layer names"
    class Wrap(Callback):
        order = 11
        def before_fit(self): self.learn.model = nn.DataParallel(self.learn.model)
        def after_fit(self): self.learn.model = self.learn.model.module
    learn = make_learner(dls, cbs=Wrap())
    with learn.no_bar(), learn.no_logging(): s = find_ticket(learn, rounds=1, epochs=1, verbose=False)
    assert set(s.rewind_weights) == {k for k in learn.model.state_dict() if not k.endswith(mask_name)}
    assert s.table.sparsity.iloc[-1] == pytest.approx(20, abs=0.5)
