"SparsifyCallback: the post's printed progression, zeros that stay zero under any optimizer, bit-for-bit rewinding, bad input."
import copy, io, contextlib, re
from functools import partial
import pytest, torch
from torch import nn
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.optimizer import SGD, Adam, OptimWrapper
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.progress import *
from lth_nbdev.all import *
from lth_nbdev.sparsifier import mask_name, Sparsifier
from lth_nbdev.data import digits_tensors, tensor_dls

@pytest.fixture(scope='module')
def dls():
    "A third of the digits in batches of 64 (8 a epoch): every test here is about the loop, not the accuracy"
    xt, yt, xv, yv = digits_tensors(seed=0)
    return tensor_dls(xt[:512], yt[:512], xv[:128], yv[:128], bs=64, mean=(xt.mean(),), std=(xt.std(),), seed=0)

def make_learner(dls, seed=0, **kw):
    torch.manual_seed(seed)
    return Learner(dls, digits_cnn(), metrics=accuracy, **kw)

POST_LINES_REWIND1 = (["Pruning of weight until a sparsity of 50%", "Sparsity at the end of epoch 0: 0.00%", "Saving Weights at epoch 1"]
    + [f"Sparsity at the end of epoch {e}: 0.00%" for e in range(1, 5)]
    + sum([["Resetting Weights to their epoch 1 values"] + [f"Sparsity at the end of epoch {e}: {s}" for e in range(e0, e0 + 5)]
           for e0, s in ((5, '16.67%'), (10, '33.33%'), (15, '50.00%'))], [])
    + ["Final Sparsity: 50.00"])

def test_post_progression_on_digits(dls):
    learn = make_learner(dls)
    out = io.StringIO()
    cb = SparsifyCallback(50, 'weight', 'global', large_final, iterative, start_epoch=5, lth=True, rewind_epoch=1)
    with contextlib.redirect_stdout(out), learn.no_bar(): learn.fit(20, 1e-3, cbs=cb)
    lines = [l for l in out.getvalue().splitlines() if l and not re.match(r'^\[?\d', l)]
    assert lines == POST_LINES_REWIND1
    # the printed sparsity is the real share of zero weights in the pruned layers
    layers = list(cb.sparsifier.layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers); total = sum(m.weight.numel() for m in layers)
    assert f"{100 * zeros / total:.2f}" == "50.00"
    assert [round(float(v[-1]), 2) for v in learn.recorder.values] == [0.] * 5 + [16.67] * 5 + [33.33] * 5 + [50.] * 5

def test_post_lth_rewind0_message_order(dls):
    learn = make_learner(dls)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), learn.no_bar():
        learn.fit(8, 1e-3, cbs=SparsifyCallback(50, 'weight', 'global', large_final, iterative, start_epoch=2, lth=True))
    lines = [l for l in out.getvalue().splitlines() if l and not re.match(r'^\[?\d', l)]
    assert lines[:2] == ["Pruning of weight until a sparsity of 50%", "Saving Weights at epoch 0"]
    assert lines.count("Resetting Weights to their epoch 0 values") == 3 and lines[-1] == "Final Sparsity: 50.00"

optimizers = {
    'sgd_momentum': partial(SGD, mom=0.9),
    'adamw': partial(Adam, wd=0.1, decouple_wd=True),
    'torch_adamw': partial(OptimWrapper, opt=torch.optim.AdamW, weight_decay=0.1),
    'torch_sgd_nesterov': partial(OptimWrapper, opt=torch.optim.SGD, momentum=0.9, nesterov=True),
}

class CheckZeros(Callback):
    "After every optimizer step (and our re-masking), assert that pruned weights are exactly zero"
    order = 5
    def after_step(self):
        self.n = getattr(self, 'n', 0) + 1
        for m in self.learn.model.modules():
            k = getattr(m, mask_name, None)
            if k is not None: assert (m.weight[~k] == 0).all()

@pytest.mark.parametrize('name', list(optimizers))
def test_pruned_weights_stay_zero(dls, name):
    learn = make_learner(dls, opt_func=optimizers[name])
    chk = CheckZeros()
    with learn.no_bar(): learn.fit(6, 1e-2, cbs=[SparsifyCallback(70, 'weight', 'local', large_final, agp, start_epoch=1, verbose=False,
                                                                  layer_type=(nn.Conv2d, nn.Linear)), chk])
    assert chk.n == 6 * 8                                 # every optimizer step was checked
    layers = [m for m in learn.model.modules() if getattr(m, mask_name, None) is not None]
    assert len(layers) == 5
    for m in layers:                                      # local: each layer at exactly 70% (agp is 1 at the last batch)
        k = getattr(m, mask_name)
        assert int((~k).sum()) == round(0.7 * k.numel()), m
        assert (m.weight[~k] == 0).all()

class SnapshotAfterReset(Callback):
    "Record model and optimizer state right after each LTH reset (before the first step of the round)"
    order = 1    # after SparsifyCallback (order 0) in before_batch
    def __init__(self, sp_cb): self.sp_cb, self.snaps = sp_cb, []
    def before_batch(self):
        if self.training and self.sp_cb.target > getattr(self, 'last', 0):
            self.last = self.sp_cb.target
            self.snaps.append((copy.deepcopy(self.learn.model.state_dict()), copy.deepcopy(self.learn.opt.state_dict())))

def test_rewinding_restores_weights_buffers_and_optimizer_bit_for_bit(dls):
    learn = make_learner(dls, opt_func=partial(Adam, wd=0.01))
    sp_cb = SparsifyCallback(60, 'weight', 'global', large_final, iterative, start_epoch=2, lth=True, rewind_epoch=1, verbose=False)
    snap = SnapshotAfterReset(sp_cb)
    with learn.no_bar(): learn.fit(8, 1e-3, cbs=[sp_cb, snap])
    assert len(snap.snaps) == 3
    rw, ro = sp_cb.rewind_weights, sp_cb.rewind_opt
    assert any(len(s) for s in ro['state'])            # the rewind point carries real Adam state
    for sd, opt_sd in snap.snaps:
        for k, v in rw.items():
            layer = k.rsplit('.', 1)[0]
            mask = sd.get(f"{layer}.{mask_name}") if k.endswith('weight') else None
            if mask is not None:
                assert torch.equal(sd[k][mask], v[mask]) and (sd[k][~mask] == 0).all()
            else: assert torch.equal(sd[k], v), k
        for s_now, s_then in zip(opt_sd['state'], ro['state']):
            assert s_now.keys() == s_then.keys()
            for key in s_now:
                a, b = s_now[key], s_then[key]
                assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b

def test_reset_end_returns_rewind_weights_times_mask(dls):
    learn = make_learner(dls)
    cb = SparsifyCallback(50, 'weight', 'global', large_final, iterative, start_epoch=2, lth=True, rewind_epoch=1, reset_end=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), learn.no_bar(), learn.no_logging(): learn.fit(5, 1e-3, cbs=cb)
    assert out.getvalue().splitlines()[-2:] == ["Resetting Weights to their epoch 1 values (reset_end)", "Final Sparsity: 50.00"]
    sd = learn.model.state_dict()
    for n, k in cb.sparsifier.masks.items():
        w = sd[f"{n}.weight"]
        assert torch.equal(w, cb.rewind_weights[f"{n}.weight"] * k)

def test_sparsity_column_added_and_removed(dls):
    learn = make_learner(dls)
    with learn.no_bar(): learn.fit(2, cbs=SparsifyCallback(30, verbose=False))
    assert 'sparsity' in learn.recorder.metric_names
    assert [m.name for m in learn.metrics] == ['accuracy']

@pytest.mark.parametrize('kwargs, message', [
    (dict(end_sparsity=100), r"end_sparsity must be in \[0, 100\)"),
    (dict(end_sparsity=-5), r"end_sparsity must be in \[0, 100\)"),
    (dict(end_sparsity='50'), r"end_sparsity must be a number in \[0, 100\)"),
    (dict(end_sparsity=float('nan')), r"end_sparsity must be in \[0, 100\)"),
    (dict(end_sparsity=50, method='layerwise'), r"method='layerwise' is unknown; accepted: 'local', 'global'"),
    (dict(end_sparsity=50, lth=True, start_epoch=2, rewind_epoch=3), r"rewind_epoch \(3\) must be <= start_epoch \(2\)"),
    (dict(end_sparsity=50, schedule=lambda p: 2 * p), r"outside \[0, 1\]"),
    (dict(end_sparsity=50, schedule=lambda p: -0.5), r"outside \[0, 1\]"),
    (dict(end_sparsity=50, schedule=lambda p: 1 - p), r"decreases"),
    (dict(end_sparsity=50, schedule=lambda p: 0.5 * p), r"returns 0.5 at p=1; it must return 1 at the end of the pruning phase, "
                                                        r"or pruning would stop at 50% of end_sparsity"),
    (dict(end_sparsity=50, start_epoch=-1), r"^start_epoch must be an integer >= 0, got -1$"),
    (dict(end_sparsity=50, start_epoch=True), r"^start_epoch must be an integer >= 0, got True$"),
    (dict(end_sparsity=50, start_epoch=1.5), r"^start_epoch must be an integer >= 0, got 1.5$"),
    (dict(end_sparsity=50, rewind_epoch=-2), r"^rewind_epoch must be an integer >= 0, got -2$"),
    (dict(end_sparsity=50, start_epoch=3, end_epoch=2), r"^end_epoch must be an integer > start_epoch \(3\), got 2$"),
    (dict(end_sparsity=50, start_epoch=2, end_epoch=2), r"^end_epoch must be an integer > start_epoch \(2\), got 2$"),
    (dict(end_sparsity=50, end_epoch=True), r"^end_epoch must be an integer > start_epoch \(0\), got True$"),
    (dict(end_sparsity=50, end_epoch=2.5), r"^end_epoch must be an integer > start_epoch \(0\), got 2.5$"),
    (dict(end_sparsity=50, lth=True, start_epoch=1, rewind_epoch=2),
     r"^rewind_epoch \(2\) must be <= start_epoch \(1\): the rewind point has to be saved before the first pruning step$"),
])
def test_bad_callback_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message): SparsifyCallback(**kwargs)

def test_unknown_granularity_fails_at_construction():
    with pytest.raises(ValueError, match=r"granularity='neuron' is unknown; accepted: channel, column, filter, kernel, row, weight"):
        SparsifyCallback(50, 'neuron')

def test_granularity_missing_for_a_layer_fails_at_fit_start(dls):
    learn = make_learner(dls)
    msg = r"granularity='filter' does not exist for Linear for layer '12'; accepted for it: weight, row, column, layer"
    with pytest.raises(ValueError, match=msg), learn.no_bar():
        learn.fit(1, cbs=SparsifyCallback(50, 'filter', layer_type=(nn.Conv2d, nn.Linear)))   # layer types passed: the error stays

def test_the_post_defaults_and_what_is_accepted():
    cb = SparsifyCallback(50)
    assert (cb.granularity, cb.method, cb.criteria, cb.schedule, cb.start_epoch, cb.end_epoch, cb.lth, cb.rewind_epoch, cb.reset_end,
            cb.regrow, cb.verbose, cb.sparsity_column) == ('weight', 'local', large_final, one_shot, 0, None, False, 0, False, False, True, True)
    assert cb.active is False and cb.sparsifier is None             # not in a fit
    SparsifyCallback(50, lth=True, start_epoch=2, rewind_epoch=2)   # rewinding to the first pruning epoch itself is fine
    SparsifyCallback(50, start_epoch=2, end_epoch=3)

def test_start_epoch_beyond_fit(dls):
    learn = make_learner(dls)
    with pytest.raises(ValueError, match=r"start_epoch \(5\) must be < the number of epochs \(3\): nothing would be pruned "
                                         r"\(under fine_tune, the epochs of its second, unfrozen fit\)$"), learn.no_bar():
        learn.fit(3, cbs=SparsifyCallback(50, start_epoch=5))

def fit_quietly(learn, n, cbs, lr=1e-3):
    learn.dls.train.rng.seed(0)                           # the same data order for every learner made on the shared `dls`
    with learn.no_bar(), learn.no_logging(): learn.fit(n, lr, cbs=cbs)

def test_end_sparsity_0_changes_nothing(dls):
    "A callback asked for 0% prunes nothing and leaves training bit for bit as it is without it"
    plain, pruned = make_learner(dls), make_learner(dls)
    fit_quietly(plain, 2, [])
    cb = SparsifyCallback(0, 'weight', 'global', verbose=False)
    fit_quietly(pruned, 2, [cb])
    assert all(bool(k.all()) for k in cb.sparsifier.masks.values())
    for (n, a), b in zip(plain.model.state_dict().items(), (v for k, v in pruned.model.state_dict().items() if not k.endswith(mask_name))):
        assert torch.equal(a, b), n

def test_end_sparsity_100_is_refused():
    "A network with every weight removed computes nothing: 100% is refused when the callback is made"
    with pytest.raises(ValueError, match=r"end_sparsity must be in \[0, 100\) \(percent of prunable weights\), got 100.0"):
        SparsifyCallback(100)

def test_end_epoch_reaches_the_target_by_then(dls):
    "iterative in 2 steps from epoch 1 to end_epoch=3: 30% from epoch 1, 60% from epoch 2 on, then no more pruning"
    learn = make_learner(dls)
    cb = SparsifyCallback(60, 'weight', 'global', schedule=partial(iterative, n_steps=2), start_epoch=1, end_epoch=3, verbose=False)
    fit_quietly(learn, 5, [cb])
    n = sum(m.weight.numel() for m in cb.sparsifier.layers.values())
    at = lambda s: 100 * round(s * n) / n
    assert [float(v[-1]) for v in learn.recorder.values] == [0., at(0.3), at(0.6), at(0.6), at(0.6)]

def test_end_epoch_beyond_the_fit_is_refused(dls):
    learn = make_learner(dls)
    with pytest.raises(ValueError, match=r"end_epoch \(5\) must be <= the number of epochs \(3\): end_sparsity would not be reached"):
        fit_quietly(learn, 3, [SparsifyCallback(50, end_epoch=5)])

class EpochMasks(Callback):
    order = 1
    def before_fit(self): self.masks = []
    def after_epoch(self):
        self.masks.append({n: getattr(m, mask_name).clone() for n, m in self.learn.model.named_modules() if getattr(m, mask_name, None) is not None})

@pytest.mark.parametrize('regrow', [False, True])
def test_regrow(dls, regrow):
    "With movement, a removed weight (now zero) has moved by its whole initial value: with regrow=True it comes back"
    learn = make_learner(dls)
    cb = SparsifyCallback(50, 'weight', 'local', movement, linear, start_epoch=1, regrow=regrow, verbose=False)
    rec = EpochMasks()
    fit_quietly(learn, 3, [cb, rec], lr=1e-2)
    came_back = sum(int((now & ~then).sum()) for a, b in zip(rec.masks, rec.masks[1:]) for then, now in zip(a.values(), b.values()))
    assert (came_back > 0) == regrow
    for n, m in cb.sparsifier.layers.items():
        k = getattr(m, mask_name)
        assert int((~k).sum()) == round(0.5 * k.numel())      # the target, exactly, either way
        assert (m.weight[~k] == 0).all()

@pytest.mark.parametrize('granularity, dim', [('row', 1), ('column', 0)])
def test_row_and_column_through_the_callback(dls, granularity, dim):
    "Linear layers lose whole rows (outputs) or columns (inputs): half of them in each layer"
    learn = make_learner(dls)
    cb = SparsifyCallback(50, granularity, 'local', layer_type=nn.Linear, verbose=False)
    fit_quietly(learn, 1, [cb])
    assert list(cb.sparsifier.layers) == ['12', '14']
    for m in cb.sparsifier.layers.values():
        k = getattr(m, mask_name)
        whole, some = k.all(dim), k.any(dim)
        assert torch.equal(whole, some)                      # every row (column) kept or removed whole
        assert int((~some).sum()) == round(0.5 * len(some))

def test_optimizer_state_is_a_deep_copy():
    "fastai's optimizers update their state in place: the rewind point must not move with them"
    from lth_nbdev.callback import optimizer_state
    assert optimizer_state(None) is None
    w = nn.Parameter(torch.ones(3))
    opt = SGD([w], lr=0.1, mom=0.9)
    w.grad = torch.ones(3); opt.step()
    saved = optimizer_state(opt)
    before = [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()} for s in saved['state']]
    w.grad = torch.ones(3); opt.step()
    assert all(torch.equal(s['grad_avg'], b['grad_avg']) for s, b in zip(saved['state'], before))

def test_restore_without_an_optimizer_state_leaves_the_optimizer_alone():
    from lth_nbdev.callback import restore, model_state
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    saved = model_state(model)
    w = nn.Parameter(torch.ones(2)); opt = SGD([w], lr=0.1, mom=0.9)
    w.grad = torch.ones(2); opt.step()
    with torch.no_grad(): model.weight.add_(1.)
    restore(model, saved, opt, None)                               # weights back, optimizer untouched
    assert torch.equal(model.weight, saved['weight']) and opt.state_dict()['state'][0]['grad_avg'].tolist() == [1., 1.]

def test_scheduled_fraction():
    "Progress 0 is the first batch of start_epoch, 1 the last batch of the pruning phase; before it, nothing"
    cb = SparsifyCallback(60, schedule=one_shot, start_epoch=1, verbose=False)
    assert cb.current_sparsity() == 0.                              # before any fit
    cb.start_iter, cb.end_iter = 10, 20
    assert [cb.scheduled_fraction(i) for i in (0, 9, 10, 19, 25)] == [0., 0., 0.6, 0.6, 0.6]
    cb.schedule = iterative
    assert [round(cb.scheduled_fraction(i), 6) for i in (9, 10, 12, 13, 15, 16, 19)] == [0., 0.2, 0.2, 0.4, 0.4, 0.6, 0.6]
    cb.schedule = linear
    assert [round(cb.scheduled_fraction(i), 6) for i in (10, 13, 19, 20, 30)] == [0., 0.2, 0.6, 0.6, 0.6]   # after the phase: 1
    cb.start_iter, cb.end_iter = 9, 11                              # two batches: p = 0, then 1
    assert [cb.scheduled_fraction(i) for i in (8, 9, 10)] == [0., 0., 0.6]
    cb.start_iter, cb.end_iter = 9, 10                              # a pruning phase of one batch: it is at p = 1
    assert (cb.scheduled_fraction(8), cb.scheduled_fraction(9)) == (0., 0.6)

def test_get_preds_before_any_fit(dls):
    "A learner holding the callback predicts before it was ever fit (no optimizer yet): nothing is pruned"
    torch.manual_seed(0)
    cb = SparsifyCallback(50, lth=True, reset_end=True)             # no rewind point is saved outside a fit: none is restored
    learn = Learner(dls, digits_cnn(), cbs=cb)
    assert learn.opt is None
    out = io.StringIO()
    with contextlib.redirect_stdout(out), learn.no_bar(): preds, _ = learn.get_preds()
    assert preds.shape == (128, 10) and cb.current_sparsity() == 0.
    assert 'frozen' not in out.getvalue()                          # no optimizer is not a frozen one

def test_a_frozen_fit_prunes_nothing_and_says_so(dls):
    torch.manual_seed(0)
    learn = Learner(dls, digits_cnn(), splitter=lambda m: [list(m[:12].parameters()), list(m[12:].parameters())])
    learn.freeze()
    cb = SparsifyCallback(50)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=cb)
    assert out.getvalue().splitlines() == ["The model is frozen: nothing is pruned in this fit, start_epoch and end_epoch count the "
                                           "epochs of the next unfrozen fit (learn.unfreeze() to prune now)"]
    assert cb.sparsifier is None and not any(hasattr(m, mask_name) for m in learn.model.modules())
    learn.unfreeze()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=cb)
    assert cb.current_sparsity() == pytest.approx(50, abs=0.01) and cb.active is False   # pruned now; inactive once the fit is over

def test_a_model_already_at_the_target_is_left_alone(dls):
    "The callback starts from the sparsity the model has: asked for what is already there, it neither prunes nor rewinds"
    learn = make_learner(dls)
    Sparsifier(learn.model, 'weight', 'global').sparsify_model(50)
    masks = {n: k.clone() for n, k in Sparsifier(learn.model).masks.items()}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), learn.no_bar(), learn.no_logging():
        learn.fit(2, cbs=SparsifyCallback(50, 'weight', 'global', lth=True))
    assert 'Resetting' not in out.getvalue()
    assert all(torch.equal(k, masks[n]) for n, k in Sparsifier(learn.model).masks.items())
    learn = make_learner(dls)
    Sparsifier(learn.model, 'weight', 'global').sparsify_model(30)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=(cb := SparsifyCallback(50, 'weight', 'global', verbose=False)))
    assert cb.current_sparsity() == pytest.approx(50, abs=0.01)     # from 30% on to 50%

class CancelAfterFirstEpoch(Callback):
    def after_epoch(self): raise CancelFitException

def test_a_fit_cancelled_before_its_rewind_point_restores_nothing(dls):
    "lth with reset_end: a fit that ends before the rewind epoch has no rewind point, and after_fit restores none"
    learn = make_learner(dls)
    cb = SparsifyCallback(50, lth=True, start_epoch=1, rewind_epoch=1, reset_end=True)
    w = {n: p.detach().clone() for n, p in learn.model.named_parameters()}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), learn.no_bar(), learn.no_logging(): learn.fit(3, lr=1e-3, cbs=[cb, CancelAfterFirstEpoch()])
    assert out.getvalue().splitlines() == ["Pruning of weight until a sparsity of 50%", "Sparsity at the end of epoch 0: 0.00%",
                                           "Final Sparsity: 0.00"]
    assert cb.rewind_weights is None and any(not torch.equal(p, w[n]) for n, p in learn.model.named_parameters())   # trained, not rewound

def test_build_sparsifier_defaults_and_granularity_objects():
    "A name builds a `Sparsifier` (the post's defaults); an object with a `sparsifier` method gets every argument, in order"
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3), nn.LayerNorm(3))
    sp = build_sparsifier(model)
    assert type(sp) is Sparsifier and sp.granularity == 'weight' and sp.method == 'local' and sp.regrow is False
    assert sp.criteria is large_final and sp.layer_type == (nn.Conv2d,) and list(sp.layers) == ['0']   # fasterai's default
    sp = build_sparsifier(model, 'row', 'global', large_init, nn.Linear, True)
    assert (sp.granularity, sp.method, sp.criteria, sp.layer_type, sp.regrow, list(sp.layers)) == ('row', 'global', large_init, (nn.Linear,), True, ['2'])
    class Recording:
        def sparsifier(self, *args): self.args = args; return 'built'
    g = Recording()
    assert build_sparsifier(model, g) == 'built' and g.args == (model, 'local', large_final, (nn.Conv2d, nn.Linear), False)
    assert build_sparsifier(model, g, 'global', small_final, nn.Linear, True) == 'built'
    assert g.args == (model, 'global', small_final, nn.Linear, True)

def test_a_granularity_object_is_not_checked_as_a_name():
    "An object with a `sparsifier` method (e.g. `ChannelGroups`) is accepted at construction: it checks itself when the fit starts"
    class Groups:
        def sparsifier(self, *args): raise AssertionError('not called before the fit')
    cb = SparsifyCallback(50, Groups(), 'local', large_final, one_shot)
    assert isinstance(cb.granularity, Groups)
    with pytest.raises(ValueError, match=r"^granularity must be a string, one of channel, .*, or a granularity object \(the post's order .*\); got object$"):
        SparsifyCallback(50, object())

# --- issue #35 (a), (b) and issue #34 (5) ---------------------------------------------------------------------

@pytest.mark.parametrize('fraction', [0.5, 0.01, 0.999])
def test_a_fraction_as_end_sparsity_warns_that_it_is_a_percent(fraction):
    with pytest.warns(UserWarning, match=rf"^end_sparsity={fraction:g} is read as {fraction:g}%; did you mean {100 * fraction:g}\?"):
        cb = SparsifyCallback(fraction)
    assert cb.end_sparsity == fraction                                   # still accepted: 0.5% is a sparsity
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for ok in (0, 1, 50, 99.5): SparsifyCallback(ok)                   # 0 and whole percents: no warning

def _same_opt_state(a, b):
    return all(sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) if isinstance(sa[k], torch.Tensor) else sa[k] == sb[k] for k in sa)
               for sa, sb in zip(a['state'], b['state']))

@pytest.mark.parametrize('rewind_optimizer', [True, False])
def test_rewind_optimizer_false_keeps_the_optimizer_state_at_a_reset(dls, rewind_optimizer):
    from lth_nbdev.callback import optimizer_state
    learn = make_learner(dls)
    cb = SparsifyCallback(50, 'weight', 'global', lth=True, start_epoch=1, rewind_epoch=1, verbose=False, sparsity_column=False,
                          rewind_optimizer=rewind_optimizer)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3, cbs=cb)
    assert any(len(s) for s in cb.rewind_opt['state'])                   # the rewind point (epoch 1) has Adam moments
    before = optimizer_state(learn.opt)
    cb.learn = learn; cb.reset_weights()
    after = optimizer_state(learn.opt)
    if rewind_optimizer: assert _same_opt_state(after, cb.rewind_opt) and not _same_opt_state(after, before)
    else: assert _same_opt_state(after, before) and not _same_opt_state(after, cb.rewind_opt)
    for k, v in cb.rewind_weights.items():                               # the weights are rewound either way (masks kept)
        if k.endswith('running_mean'): assert torch.equal(learn.model.state_dict()[k], v)

@pytest.mark.parametrize('args, name', [
    ((50, 'weight', 'global', iterative, large_final), 'criteria'),     # the issue's call: criteria and schedule swapped
    ((50, 'weight', 'global', large_final, large_final), 'schedule'),
    ((50, 'weight', large_final, 'global'), 'method'),
    ((50, large_final), 'granularity'),
    (('weight', 50), 'end_sparsity'),
])
def test_swapped_arguments_name_the_wrong_one(args, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"): SparsifyCallback(*args)

def test_the_swapped_call_of_the_issue_names_criteria_and_the_schedule():
    with pytest.raises(ValueError, match=r"^criteria must be .*; got the schedule iterative$"):
        SparsifyCallback(50, 'weight', 'global', iterative, large_final)

def test_layer_type_reads_the_resolved_default_after_a_fit(dls):
    learn = make_learner(dls)
    cb = SparsifyCallback(50, verbose=False, sparsity_column=False)
    assert cb.layer_type is None                                          # the default, until a model resolves it
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=cb)
    assert cb.layer_type == (nn.Conv2d,)

def test_help_shows_sparsify_callbacks_parameters():
    doc = SparsifyCallback.__doc__
    assert doc.startswith('Prune `learn.model`') and 'Parameters:' in doc and 'rewind_epoch: int = 0' in doc
    assert 'after_create' not in doc                       # fastai's event keyword arguments are left out
