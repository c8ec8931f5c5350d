"""Issue 15, item 2: are the fastai-native built-in loaders as fast as the old tensor loaders? Epoch time at 64 px, side by side.

Times one ResNet-18 training epoch on Imagenette at `--size` px (default 64) with

* `old`: the loaders of lth_nbdev before item 2 (`tests/loader_old.py`, a frozen copy of commit c590bf2's `tensor_dls`:
  a plain fastai `DataLoader`, a whole batch gathered by one indexing call, closures as batch transforms);
* `new`: today's `lth_nbdev.data.imagenette_dls`: fastai `Datasets` (`TensorDatasets`) and `TfmdDL` (`TensorDL`), a batch
  still gathered by one indexing call, fastai's `IntToFloatTensor` and `Normalize` then `FlipBatch` (fastai `Pipeline`s
  dispatching on `TensorImage`), the batch handed to the model as plain tensors as before.

Both read the same tensor cache (`imagenette_tensors`; nothing is rebuilt when the cache exists). Before timing, it checks
that both give the same first batches (same seed): the loaders differ in speed only. The two then run alternately
(warm-up old, warm-up new, then old, new, new, old, old, new, ...), `--repeats` timed epochs each (default 5), in one process, so that
a drift of the machine's load hits both alike. Each epoch is a fresh ResNet-18 trained for one epoch, validation skipped.
The order flips every repeat, so that whatever the first epoch of a pair leaves behind (freed memory, a warm cache)
falls on both alike. The table gives each loader's minimum and median; the verdict compares the minima (the least
disturbed epoch of each): new/old <= 1.05 is the issue's bar. The repeats are also paired (new over old within a
repeat), with a 95% interval on their geometric mean. A data-only pass (every training batch fetched, no model)
shows the loaders' own share.

    python bench/loader_epoch.py --data $LTH_DATA     # about 12 x 100-200 s, on an idle machine
    taskset -c 0 python bench/loader_epoch.py --data $LTH_DATA --max-batches 2 --repeats 1   # does it run?

Run it on otherwise idle cores (`--threads` of them, default 2): anything else on those cores makes the numbers meaningless.
"""
import argparse, math, os, statistics, sys, time
from pathlib import Path
import torch
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.callback.core import Callback, CancelValidException, CancelEpochException
import fastai.callback.progress   # learn.no_bar
sys.path.insert(0, str(Path(__file__).parents[1]/'tests'))   # the frozen copy is the reference of tests/test_loaders.py
import loader_old
from lth_nbdev.data import imagenette_dls

class _TrainOnly(Callback):
    "Skip validation (the epoch time is the training pass); stop after `max_batches` training batches if given"
    def __init__(self, max_batches=None): self.max_batches = max_batches
    def after_batch(self):
        if self.training and self.max_batches and self.iter + 1 >= self.max_batches: raise CancelEpochException()
    def before_validate(self): raise CancelValidException()

def epoch_seconds(dls, seed:int, max_batches=None)->float:
    "One training epoch of a fresh ResNet-18 (no validation), in seconds"
    from torchvision.models import resnet18
    torch.manual_seed(seed)
    learn = Learner(dls, resnet18(num_classes=dls.c), metrics=accuracy)
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3, cbs=[_TrainOnly(max_batches)])
    return time.perf_counter() - start

def data_seconds(dls, max_batches=None)->float:
    "Every training batch fetched and transformed, no model"
    start = time.perf_counter()
    for i, _ in enumerate(dls.train):
        if max_batches and i + 1 >= max_batches: break
    return time.perf_counter() - start

def same_first_batches(dls:dict, n:int=3)->bool:
    "The old and new loaders give the same first `n` training and validation batches (values, dtypes, strides), torch seeded alike"
    got = []
    for k in ('old', 'new'):
        torch.manual_seed(0); dls[k].train.rng.seed(0); dls[k].valid.rng.seed(1)
        bs = []
        for dl in (dls[k].train, dls[k].valid):
            it = iter(dl); bs += [tuple(t.clone() for t in next(it)) for _ in range(min(n, len(dl)))]
        got.append(bs)
    # the strides too: the model's work is the same only if the batches are laid out alike in memory
    return all(type(a) is type(b) and a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b)
               for p, q in zip(*got) for a, b in zip(p, q))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', help="an Imagenette folder or .tgz (default: $LTH_DATA, else fastai's download)")
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--repeats', type=int, default=5, help="timed epochs per loader (default: 5)")
    p.add_argument('--threads', type=int, default=2, help="torch threads (default: 2)")
    p.add_argument('--max-batches', type=int, default=None, help="at most this many training batches per epoch (a quick check that it runs; no timing)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dls = dict(old=loader_old.imagenette_dls(a.size, bs=a.bs, path=a.data, seed=0),
               new=imagenette_dls(a.size, bs=a.bs, path=a.data, seed=0))
    n_batches = len(dls['old'].train) if not a.max_batches else min(a.max_batches, len(dls['old'].train))
    print(f"{len(dls['old'].train.dataset)} training images at {a.size} px, batch size {a.bs}, {n_batches} batches an epoch, "
          f"torch threads {torch.get_num_threads()}, device {dls['new'].device}, cores {sorted(os.sched_getaffinity(0))}")
    same = same_first_batches(dls)
    print(f"same first batches (old vs new): {same}")
    if not same: sys.exit("the loaders give different batches: timing them side by side would compare different work")
    for k in dls: epoch_seconds(dls[k], 0, a.max_batches)                # warm-up, untimed
    times = {k: dict(epoch=[], data=[]) for k in dls}
    for r in range(a.repeats):
        for k in (('old', 'new') if r % 2 == 0 else ('new', 'old')):    # alternating, the order flipped every repeat
            times[k]['data'].append(data_seconds(dls[k], a.max_batches))
            times[k]['epoch'].append(epoch_seconds(dls[k], r, a.max_batches))
            print(f"  repeat {r} {k}: epoch {times[k]['epoch'][-1]:.2f} s, data pass {times[k]['data'][-1]:.2f} s", flush=True)
    print("\n| loader | data pass (s, min) | epoch (s, min) | epoch (s, median) | epochs (s) |\n|:--|--:|--:|--:|:--|")
    for k, t in times.items():
        print(f"| {k} | {min(t['data']):.2f} | {min(t['epoch']):.2f} | {statistics.median(t['epoch']):.2f} | {', '.join(f'{s:.2f}' for s in t['epoch'])} |")
    ratio = min(times['new']['epoch']) / min(times['old']['epoch'])
    note = f" (only {a.max_batches} batches an epoch: not a measurement)" if a.max_batches else ""
    print(f"\nnew/old epoch time (minima): {ratio:.3f}, {'within' if ratio <= 1.05 else 'NOT within'} 5%{note}")
    # the repeats paired: new over old within each repeat, with a 95% interval (t on the log ratios)
    logs = [math.log(n / o) for n, o in zip(times['new']['epoch'], times['old']['epoch'])]
    if len(logs) > 1:
        from scipy.stats import ttest_1samp
        ci = ttest_1samp(logs, 0).confidence_interval(0.95)
        print(f"new/old epoch time, paired by repeat: {', '.join(f'{math.exp(l):.3f}' for l in logs)}; "
              f"geometric mean {math.exp(statistics.mean(logs)):.3f}, 95% interval {math.exp(ci.low):.3f} to {math.exp(ci.high):.3f}")
    extra = min(times['new']['data']) - min(times['old']['data'])
    print(f"the loaders' own work (data pass, minima): {min(times['new']['data']):.2f} s new, {min(times['old']['data']):.2f} s old; "
          f"the difference is {100 * extra / min(times['old']['epoch']):.2f}% of the old epoch")

if __name__ == '__main__': main()
