"""A search killed with SIGKILL in the middle of a round, then resumed from its checkpoint, ends with
exactly the same masks, weights and table as a search that was never interrupted (CPU, fixed seed).
The same holds for a search resumed from a checkpoint in the format of lth_nbdev 0.1.0 (a plain
`torch.save` holding NumPy arrays), which is still read with `weights_only=True`.

The search runs in a subprocess (the script below). A callback in it appends a line to a log at the start
of every training run, so the test can tell how many rounds each process trained; in the run that is to be
killed it also writes a marker file part-way through round 2 and then waits, so the SIGKILL lands
mid-round, after round 1's checkpoint was written and before round 2's.
"""
import os, sys, signal, subprocess, time, textwrap
from pathlib import Path
import pytest
import numpy as np
import torch
from lth_nbdev.search import read_checkpoint, checkpoint_signature

SCRIPT = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)                 # one thread: the same float sums in the same order, every run
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback
    from lth_nbdev.data import digits_dls, digits_cnn
    from lth_nbdev.search import find_ticket

    ckpt, out, log = sys.argv[1:4]
    kill_round = int(os.environ.get('LTH_TEST_STALL_ROUND', '-1'))   # the round in which to signal and wait

    class FitLog(Callback):
        "Log the start of every training run; in round `kill_round` write `log.marker` mid-epoch and wait to be killed"
        order = 99
        def __init__(self): self.fits = 0
        def before_train(self):                  # get_preds also sends before_fit; only training sends before_train
            if self.epoch: return
            self.fits += 1
            with open(log, 'a') as f: f.write(f"fit\\n")
        def after_batch(self):
            if self.training and self.fits == 1 + kill_round and self.iter == 5 and self.epoch == 1:
                Path(log + '.marker').write_text('mid-round')
                time.sleep(600)

    torch.manual_seed(0)
    learn = Learner(digits_dls(bs=64, seed=0), digits_cnn(), loss_func=CrossEntropyLossFlat(), cbs=FitLog())
    learn.remove_cbs(ProgressCallback)
    search = find_ticket(learn, rounds=3, epochs=2, checkpoint=ckpt, seed=0)
    torch.save(dict(masks=search.masks, model=learn.model.state_dict(), rewind=search.rewind_weights,
                    rows=[{k: v for k, v in r.items() if k != 'seconds'} for r in search.rows]), out)
''')

TIMEOUT = 900   # seconds per process: generous, for a machine shared with other jobs

def _run(tmp, name, stall_round=None, wait=True):
    env = {**os.environ, 'PYTHONHASHSEED': '0'}
    env.pop('LTH_TEST_STALL_ROUND', None)
    if stall_round is not None: env['LTH_TEST_STALL_ROUND'] = str(stall_round)
    script = tmp/'search.py'; script.write_text(SCRIPT)
    args = [sys.executable, str(script), str(tmp/f'{name}.ckpt'), str(tmp/f'{name}.out'), str(tmp/f'{name}.log')]
    stdout = open(tmp/f'{name}.stdout', 'a')
    p = subprocess.Popen(args, stdout=stdout, stderr=subprocess.STDOUT, env=env)
    if wait:
        try: rc = p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait()
            pytest.fail(f"the {name} search took over {TIMEOUT} s (the whole test took 49 s on a 2-core machine shared with one training job)")
        assert rc == 0, (tmp/f'{name}.stdout').read_text()[-3000:]
    return p

def _fits(tmp, name): return (tmp/f'{name}.log').read_text().count('fit')

def _assert_identical(a, b, where=''):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a: _assert_identical(a[k], b[k], f'{where}/{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)): _assert_identical(x, y, f'{where}[{i}]')
    else: assert a == b, (where, a, b)

@pytest.mark.slow   # 30 s: two whole searches in subprocesses, one killed (bash tools/test.sh --full, and CI, run it)
def test_sigkill_mid_round_then_resume_is_bit_identical(tmp_path):
    _run(tmp_path, 'straight')                              # the reference: never interrupted
    assert _fits(tmp_path, 'straight') == 4                 # the dense round and 3 pruning rounds

    p = _run(tmp_path, 'killed', stall_round=2, wait=False)
    marker, deadline = tmp_path/'killed.log.marker', time.time() + TIMEOUT
    try:
        while not marker.exists():
            assert p.poll() is None, (tmp_path/'killed.stdout').read_text()[-3000:]
            assert time.time() < deadline, 'the search never reached round 2'
            time.sleep(0.1)
    finally:
        if p.poll() is None: os.kill(p.pid, signal.SIGKILL)     # mid-round 2: the callback is waiting there
        p.wait()
    assert p.returncode == -signal.SIGKILL
    ckpt = tmp_path/'killed.ckpt'
    assert ckpt.exists() and ckpt.with_name('killed.ckpt.prev').exists()           # round 1's, and round 0's kept
    assert not ckpt.with_name('killed.ckpt.tmp').exists()
    assert ckpt.read_bytes().startswith(checkpoint_signature)                       # the checked container, not a pickle
    assert read_checkpoint(ckpt)['next_round'] == 2                                 # killed after round 1, in round 2
    assert not (tmp_path/'killed.out').exists()
    assert _fits(tmp_path, 'killed') == 3                                           # rounds 0, 1 and (part of) 2

    _run(tmp_path, 'killed')                                                        # the same command: resumes
    assert 'Resuming from' in (tmp_path/'killed.stdout').read_text()
    assert _fits(tmp_path, 'killed') == 3 + 2                                       # only rounds 2 and 3 were retrained

    ref, res = torch.load(tmp_path/'straight.out', weights_only=True), torch.load(tmp_path/'killed.out', weights_only=True)
    assert sorted(ref['masks']) == [0, 1, 2, 3]
    _assert_identical(ref, res)                            # every mask, weight, buffer and table entry, bit for bit


class Stop(Exception): "Raised by `StopAt` to interrupt a search in-process"

def _search(ckpt, stop_fit=None, rounds=2, opt_func=None):
    "A small search (digits, one epoch per round) checkpointing to `ckpt`; with `stop_fit`, interrupted when that training run starts"
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.callback.core import Callback
    from lth_nbdev.data import digits_dls, digits_cnn
    from lth_nbdev.search import find_ticket
    class StopAt(Callback):
        order, fits = 99, 0
        def before_train(self):
            if self.epoch: return
            StopAt.fits += 1
            if StopAt.fits == stop_fit: raise Stop('stopped here by the test')
    torch.manual_seed(0)
    learn = Learner(digits_dls(bs=64, seed=0), digits_cnn(), loss_func=CrossEntropyLossFlat(), cbs=StopAt(),
                    **({} if opt_func is None else dict(opt_func=opt_func)))
    with learn.no_bar(), learn.no_logging():
        s = find_ticket(learn, rounds=rounds, epochs=1, checkpoint=ckpt, seed=0, controls=('random_prune',), verbose=False)
    return dict(masks=s.masks, model=learn.model.state_dict(), rewind=s.rewind_weights,
                rows=[{k: v for k, v in r.items() if k != 'seconds'} for r in s.rows])

def _legacy(d:dict)->dict:
    "A checkpoint as lth_nbdev 0.1.0 wrote it: NumPy's state as a tuple with an array, per-image results as arrays, NumPy floats"
    from fastcore.foundation import L
    n = d['rng']['numpy']
    rng = dict(d['rng'], numpy=(n['kind'], n['key'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))
    rows = [dict(r, ci_low=np.float64(r['ci_low']), ci_high=np.float64(r['ci_high'])) for r in d['rows']]
    opt = dict(d['opt'], hypers=L(dict(h, lr=np.float64(h['lr'])) for h in d['opt']['hypers']))
    return {k: v for k, v in dict(d, rng=rng, rows=rows, opt=opt).items() if k != 'kind'}

def test_resumed_from_legacy_checkpoint_is_bit_identical(tmp_path):
    "Stopped by an exception after round 1; its checkpoint rewritten as lth_nbdev 0.1.0 wrote them; resumed"
    ref = _search(tmp_path/'straight.ckpt')
    ckpt = tmp_path/'stopped.ckpt'
    with pytest.raises(Stop): _search(ckpt, stop_fit=4)          # the fits: dense, ticket 1, its control (StopAt goes along), then round 2 stops
    d = read_checkpoint(ckpt)
    assert d['next_round'] == 2 and isinstance(d['correct'][(1, 'ticket')], np.ndarray)
    torch.save(_legacy(d), ckpt)                                   # a zip written by torch.save, with NumPy objects in it
    assert ckpt.read_bytes()[:2] == b'PK'
    with pytest.raises(Exception, match='Weights only load failed'): torch.load(ckpt, weights_only=True)   # needs its allowlist
    _assert_identical(ref, _search(ckpt))

def test_resumed_with_a_torch_optimizer_is_bit_identical(tmp_path):
    "fastai's OptimWrapper around torch.optim.AdamW: its state dict (torch's layout) is stored and put back as well"
    from functools import partial
    from fastai.optimizer import OptimWrapper
    opt_func = partial(OptimWrapper, opt=torch.optim.AdamW)
    ref = _search(tmp_path/'straight.ckpt', rounds=1, opt_func=opt_func)
    ckpt = tmp_path/'stopped.ckpt'
    with pytest.raises(Stop): _search(ckpt, stop_fit=2, rounds=1, opt_func=opt_func)      # stopped as round 1 starts
    assert read_checkpoint(ckpt)['next_round'] == 1 and 'param_groups' in read_checkpoint(ckpt)['opt']
    _assert_identical(ref, _search(ckpt, rounds=1, opt_func=opt_func))
