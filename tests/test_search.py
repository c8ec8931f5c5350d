"find_ticket: exact sparsity per round, rounds start from the rewound weights and optimizer state, controls match the ticket."
import copy
from functools import partial
import pytest, torch
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.optimizer import Adam
from fastai.callback.progress import *
import lth_nbdev.search as search_mod
from lth_nbdev.all import *
from lth_nbdev.search import find_ticket, round_sparsities
from lth_nbdev.sparsifier import mask_name
from lth_nbdev.callback import model_state

def make_learner(seed=0):
    torch.manual_seed(seed)
    return Learner(digits_dls(bs=128, seed=seed), digits_cnn(width=8), metrics=accuracy, opt_func=partial(Adam, wd=0.01))

@pytest.fixture(scope='module')
def traced_search():
    "A 3-round search with rewind_epoch=1 and both controls, recording the state each `train` call starts from"
    starts = []
    real_train = search_mod.train
    def spy(learn, epochs, fit='one_cycle', lr=None, cbs=None):
        starts.append((learn, model_state(learn.model), copy.deepcopy(learn.opt.state_dict()) if learn.opt else None,
                       {n: getattr(m, mask_name).clone() for n, m in learn.model.named_modules() if getattr(m, mask_name, None) is not None}))
        return real_train(learn, epochs, fit, lr, cbs)
    search_mod.train = spy
    try:
        learn = make_learner()
        with learn.no_bar(): s = find_ticket(learn, rounds=3, epochs=2, fraction=0.2, rewind_epoch=1, lr=3e-3,
                                             controls=('random_reinit', 'random_prune'), verbose=False)
    finally: search_mod.train = real_train
    return s, learn, starts

def test_sparsity_after_k_rounds_is_exact(traced_search):
    s, learn, _ = traced_search
    n = sum(m.weight.numel() for m in s.sparsifier.layers.values())
    for k in (1, 2, 3):
        removed = sum(int((~m).sum()) for m in s.masks[k].values())
        assert removed == round((1 - 0.8 ** k) * n)
        row = s.table[(s.table['round'] == k) & (s.table.arm == 'ticket')].iloc[0]
        assert row.sparsity == pytest.approx(100 * removed / n, abs=1e-9)
    assert list(s.table.arm) == ['dense'] + ['ticket', 'random_reinit', 'random_prune'] * 3

def test_each_round_starts_from_rewound_weights_and_optimizer(traced_search):
    s, learn, starts = traced_search
    ticket_starts = [st for st in starts if st[0] is learn][1:]          # the dense round is the first call
    assert len(ticket_starts) == 3
    assert any(len(x) for x in s.rewind_opt['state'])                     # Adam state at epoch 1 is not empty
    for k, (_, weights, opt_sd, masks) in enumerate(ticket_starts, 1):
        for key, v in s.rewind_weights.items():
            layer = key.rsplit('.', 1)[0]
            if key.endswith('.weight') and layer in masks:
                assert torch.equal(weights[key], v * masks[layer]), key
            else: assert torch.equal(weights[key], v), key
        for now, then in zip(opt_sd['state'], s.rewind_opt['state']):
            assert now.keys() == then.keys()
            for name in now: assert torch.equal(now[name], then[name]) if isinstance(now[name], torch.Tensor) else now[name] == then[name]
        for layer, m in masks.items(): assert torch.equal(m.cpu(), s.masks[k][layer])

def test_controls_have_the_tickets_per_layer_sparsity(traced_search):
    s, learn, starts = traced_search
    control_starts = [st for st in starts if st[0] is not learn]
    assert len(control_starts) == 6
    for i, (_, weights, _, masks) in enumerate(control_starts):
        k = i // 2 + 1
        for layer, m in masks.items(): assert int((~m).sum()) == int((~s.masks[k][layer]).sum())
        if i % 2 == 0:   # random re-init: the ticket's own mask, different weights
            assert all(torch.equal(m.cpu(), s.masks[k][l]) for l, m in masks.items())
            assert not torch.equal(weights['0.weight'], s.rewind_weights['0.weight'] * masks['0'])
        else:            # random pruning: W_t, another mask
            assert not all(torch.equal(m.cpu(), s.masks[k][l]) for l, m in masks.items())
            assert torch.equal(weights['0.weight'], s.rewind_weights['0.weight'] * masks['0'])

def test_ticket_round_trip(traced_search):
    s, learn, _ = traced_search
    t = s.ticket(2)
    model = apply_ticket(digits_cnn(width=8), t['masks'], t['weights'])
    assert sum(int((m.weight == 0).sum()) for n, m in model.named_modules() if n in t['masks']) == \
           sum(int((~k).sum()) for k in t['masks'].values())

@pytest.mark.parametrize('kwargs, message', [
    (dict(rounds=0), r"rounds must be an integer >= 1"),
    (dict(rounds=2, fraction=1.0), r"fraction must be in \(0, 1\)"),
    (dict(sparsities=[50, 20]), r"sparsities must be non-decreasing"),
    (dict(sparsities=[20, 120]), r"sparsities must be in \[0, 100\)"),
    (dict(rounds=2, epochs=2, rewind_epoch=2), r"rewind_epoch must be an integer in \[0, epochs=2\)"),
    (dict(rounds=2, controls=('shuffle',)), r"controls may hold random_reinit, random_prune; got 'shuffle'"),
    (dict(rounds=2, fit='sgdr'), r"fit='sgdr' is unknown; accepted: one_cycle, fit, flat_cos"),
    (dict(rounds=2, method='both'), r"method='both' is unknown"),
])
def test_bad_search_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message): find_ticket(make_learner(), **kwargs)

def test_a_search_shows_a_compact_table():
    "A TicketSearch in a notebook: sparsity and accuracy (k/n, 95% interval) as text, so that the table fits a page (issue 33)"
    s = search_mod.TicketSearch.__new__(search_mod.TicketSearch)
    s.rows = [dict(round=0, arm='dense', target=0., sparsity=0., accuracy=355 / 359, k=355, n=359, ci_low=.972, ci_high=.996,
                   valid_loss=0.08123, seconds=1.234)]
    assert list(s._shown().columns) == ['round', 'arm', 'sparsity', 'accuracy', 'valid_loss', 'seconds']
    assert '98.89% (355/359, 95% CI' in repr(s) and '0.00%' in repr(s) and '<table' in s._repr_html_()
    assert list(s.table.columns)[:4] == ['round', 'arm', 'target', 'sparsity']   # the numbers stay numbers

def test_help_shows_find_tickets_parameters():
    doc = find_ticket.__doc__
    assert doc.startswith('Iterative magnitude pruning in rounds') and 'Parameters:' in doc and 'epochs per round' in doc
