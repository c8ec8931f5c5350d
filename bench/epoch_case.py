"""End-to-end cost of training with masks kept applied: one epoch of ResNet-18 on Imagenette at 64 px, CPU.

Run by `bench/run_all.py`; by hand: `python bench/epoch_case.py` (about 20 minutes on 2 idle cores), or
`python bench/epoch_case.py --max-batches 20 --reps 2` for a quick look. Prints JSON lines, one per run, then
one summary line per arm.

Three arms, each a fresh ResNet-18 (same seed, same data order) trained for one epoch with `learn.fit(1, 1e-3)`:
- dense: no pruning callback;
- ours: `SparsifyCallback(50, 'weight', 'global', large_final, one_shot)`: prunes at the first batch, then
  zeroes the pruned weights after every optimizer step;
- fasterai 0.4.1: its `SparsifyCallback(0.5, 'weight', 'global', large_final, one_shot)`, the same work.

The arms run interleaved (the order rotates each repetition) so that drift in the machine's speed hits them
alike; the summary takes each arm's minimum over the repetitions. The epoch time is the whole `fit`
(training and validation); the training time is the training phase alone, where all the masking happens.
The epochs of one arm spread by several percent from run to run, so each callback's own time is also measured
inside the epoch (every event it handles, pruning included) and given as a share of the rest of the epoch.
"""
import argparse, copy, json, os, time, warnings
from pathlib import Path
import torch, torchvision
from torch import nn

warnings.filterwarnings('ignore')
here = Path(__file__).resolve().parent
default_data = here.parent.parent/'shared'/'data'/'imagenette2-224.tgz'

def phase_timer():
    from fastai.callback.core import Callback
    class PhaseTimer(Callback):
        "Wall time of the training phase of each epoch"
        order = -20
        def before_train(self): self.t0 = time.perf_counter()
        def after_train(self): self.train_s = time.perf_counter() - self.t0
    return PhaseTimer()

def timed(cb):
    "Make `cb` add the wall time of every event it handles to `cb.own_s` (its in-situ cost inside the epoch)"
    base = type(cb)
    class Timed(base):
        def __call__(self, event_name):
            t = time.perf_counter()
            try: return base.__call__(self, event_name)
            finally: self.own_s += time.perf_counter() - t
    cb.__class__, cb.own_s = Timed, 0.
    return cb

def callbacks(arm):
    if arm == 'dense': return []
    if arm == 'ours':
        from lth_nbdev.callback import SparsifyCallback
        from lth_nbdev.criteria import large_final
        from lth_nbdev.schedules import one_shot
        return [timed(SparsifyCallback(50, 'weight', 'global', large_final, one_shot, verbose=False))]
    from fasterai.sparse.sparsify_callback import SparsifyCallback as FCallback
    from fasterai.core.criteria import large_final as f_large_final
    from fasterai.core.schedule import one_shot as f_one_shot
    return [timed(FCallback(0.5, 'weight', 'global', f_large_final, copy.deepcopy(f_one_shot), layer_type=(nn.Conv2d, nn.Linear)))]

def one_run(arm, dls, seed):
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    timer = phase_timer()
    cbs = callbacks(arm)
    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), metrics=accuracy, cbs=[timer] + cbs)
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter(); learn.fit(1, 1e-3); epoch_s = time.perf_counter() - t0
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return dict(arm=arm, epoch_s=epoch_s, train_s=timer.train_s, callback_s=sum(c.own_s for c in cbs), sparsity=100 * zeros / n,
                valid_accuracy=float(learn.recorder.values[-1][learn.recorder.metric_names[1:-1].index('accuracy')]))

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--reps', type=int, default=5, help='runs per arm; the summary takes the minimum')
    p.add_argument('--max-batches', type=int, default=None, help='train on this many batches only (default: the whole epoch)')
    p.add_argument('--data', default=os.environ.get('LTH_DATA') or (default_data if default_data.exists() else None))
    a = p.parse_args()
    from lth_nbdev.data import imagenette_dls
    try: import fasterai.sparse.sparsify_callback; arms = ['dense', 'ours', 'fasterai']
    except ImportError: arms = ['dense', 'ours']; print(json.dumps(dict(arm='fasterai', skipped='not installed')))
    dls = imagenette_dls(64, bs=64, path=a.data, seed=0)
    if a.max_batches:
        dls.train.n = a.max_batches * dls.train.bs   # a fixed prefix of each (seeded) epoch
    print(json.dumps(dict(setup=f"ResNet-18, Imagenette 64 px, bs 64, {len(dls.train)} training batches, "
                               f"{len(dls.valid.dataset)} validation images, torch threads {torch.get_num_threads()}")), flush=True)
    runs = []
    for rep in range(a.reps):
        order = arms[rep % len(arms):] + arms[:rep % len(arms)]
        for arm in order:
            r = one_run(arm, dls, seed=0); r['rep'] = rep; runs.append(r)
            print(json.dumps(r), flush=True)
    best = {arm: {k: min(r[k] for r in runs if r['arm'] == arm) for k in ('epoch_s', 'train_s', 'callback_s')} for arm in arms}
    for arm in arms:
        # the callback's own time, measured inside each epoch, is a finer gauge of its cost than the difference of
        # two noisy epoch times: the epoch it adds to is (epoch - callback) long
        own = [r['callback_s'] / (r['epoch_s'] - r['callback_s']) for r in runs if r['arm'] == arm]
        print(json.dumps(dict(summary=arm, reps=a.reps, **{f'min_{k}': v for k, v in best[arm].items()},
                              epoch_ratio=best[arm]['epoch_s'] / best['dense']['epoch_s'],
                              train_ratio=best[arm]['train_s'] / best['dense']['train_s'],
                              callback_share_median=sorted(own)[len(own) // 2])), flush=True)

if __name__ == '__main__': main()
