"""A new user's first hour (issue #35): the README's code run in order, and `from lth_nbdev.all import *` after fastai's."""
import subprocess, sys
import pytest, torch
from torch import nn

def test_readme_block_2_after_block_1_is_refused_with_what_to_do():
    "Block 1 leaves `learn` pruned to 50% (masks and zeros); block 2's `find_ticket(learn, ...)` must not print a 'dense' 50%"
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from lth_nbdev.all import digits_dls, digits_cnn, SparsifyCallback, large_final, iterative, find_ticket, mask_name
    dls = digits_dls()
    learn = Learner(dls, digits_cnn(), metrics=accuracy)
    sp_cb = SparsifyCallback(50, 'weight', 'global', large_final, iterative, start_epoch=1, lth=True, rewind_epoch=1, verbose=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, cbs=sp_cb)     # block 1, shorter
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    masked = sorted(n for n, m in learn.model.named_modules() if getattr(m, mask_name, None) is not None)
    with pytest.raises(ValueError) as e: find_ticket(learn, rounds=3, epochs=1, fraction=0.2, controls=('random_reinit', 'random_prune'))
    msg = str(e.value)
    assert 'find_ticket needs learn holding a dense, freshly initialized model' in msg and 'Give it a new Learner' in msg, msg
    assert 'masks that remove 50.00% of the weights' in msg, msg
    # refused before anything changed: the same weights and the same masked layers (none added)
    assert sorted(n for n, m in learn.model.named_modules() if getattr(m, mask_name, None) is not None) == masked
    for k, v in learn.model.state_dict().items(): assert torch.equal(v, before[k]), k
    # zeros without masks (a pruned model made permanent) are refused too
    fresh = Learner(dls, digits_cnn(), metrics=accuracy)
    with torch.no_grad(): fresh.model[0].weight.zero_(); fresh.model[3].weight[:, :8] = 0
    with pytest.raises(ValueError, match='of the weights it would prune at exactly 0'): find_ticket(fresh, rounds=1, epochs=1)
    assert [n for n, m in fresh.model.named_modules() if getattr(m, mask_name, None) is not None] == []
    # masks that removed weights are refused even where the weights are not zero (yet)
    from lth_nbdev.all import TicketSearch
    masked = Learner(dls, digits_cnn(), metrics=accuracy)
    layer = TicketSearch(masked, [20.], 1).sparsifier.layers['0']
    getattr(layer, mask_name)[:2] = False
    assert int((layer.weight == 0).sum()) == 0
    with pytest.raises(ValueError, match='carries masks that remove'): find_ticket(masked, rounds=1, epochs=1)

def test_find_ticket_prunes_convolutions_by_default():
    from fastai.learner import Learner
    from lth_nbdev.all import digits_dls, digits_cnn, TicketSearch
    s = TicketSearch(Learner(digits_dls(), digits_cnn()), [20.], 1)
    assert {type(m) for m in s.sparsifier.layers.values()} == {nn.Conv2d}
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    s = TicketSearch(Learner(digits_dls(), mlp), [20.], 1)
    assert {type(m) for m in s.sparsifier.layers.values()} == {nn.Linear}    # a model without any convolution

def test_star_imports_keep_pythons_random():
    code = ("from fastai.vision.all import *\nfrom lth_nbdev.all import *\nimport types\n"
            "random.seed(0); print(isinstance(random, types.ModuleType), criteria.random.name, criteria_by_name['random'] is criteria.random)\n"
            "import lth_nbdev.all as a; print(len(a.__all__), sum(len(m.__all__) for m in a._modules), 'imagenet_stats' in a.__all__, "
            "'atomic_save' in a.__all__, any(n in a.__all__ for n in ('checked_bytes', 'check_sparsity', 'TensorDL', 'cut_lowest')))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env={'PYTHONWARNINGS': 'ignore', 'PATH': ''})
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.split('\n')[:2]
    assert first == 'True random True', r.stdout
    n, total, stats, save, internals = second.split()
    assert int(n) < int(total) - 40 and stats == save == internals == 'False', second     # trimmed to what a user calls
