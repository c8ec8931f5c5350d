"""Issue 15, item 2: is a fastai-native loader over the decoded tensors as fast as today's tensor loader?

Times one ResNet-18 training epoch at 64 px on Imagenette, side by side, with

* `old`: `imagenette_dls(64)`, today's loader (a whole batch gathered by one indexing call, closures as batch
  transforms; it does not `export`, `show_batch`, `predict` or feed `ClassificationInterpretation`);
* `new`: a fastai `Datasets` over the same cached uint8 tensors (items are indices, decoded to `TensorImage` and
  `TensorCategory` by picklable transforms), batched by fastai's collate, with fastai's own batch transforms
  (`IntToFloatTensor`, `Flip`, `Normalize.from_stats(*imagenet_stats)`): the candidate for item 2.

The two run alternately (old, new, old, new, ...) in one process, `--repeats` times each, after one untimed
warm-up epoch each, so that a drift of the machine's load hits both alike; the table gives each one's median and
the ratio new/old, and the last line says whether the new loader is within 5% (the issue's bar). It also times a
data-only pass (every training batch fetched, no model) to show the loaders' own share.

    python bench/loader_epoch.py                       # $LTH_DATA or the fastai download; about 4 x 2 x 200 s on 2 CPUs
    python bench/loader_epoch.py --data ~/imagenette2-160.tgz --repeats 3 --threads 2

Run it on an otherwise idle machine: nothing else may run on the cores it uses.
"""
import argparse, statistics, time
import torch
from torch import nn
from fasttransform import Transform
from fastai.data.core import Datasets, DataLoaders
from fastai.data.transforms import IntToFloatTensor, Normalize
from fastai.torch_core import TensorImage, TensorCategory
from fastai.vision.augment import Flip
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.callback.progress import ProgressCallback   # learn.no_bar
from lth_nbdev.data import imagenette_tensors, imagenette_dls, imagenet_stats

class TakeImage(Transform):
    "Index -> the `i`-th decoded image, as a `TensorImage` (picklable: the tensor is an attribute, not a closure)"
    def __init__(self, x): self.x = x
    def encodes(self, i:int): return TensorImage(self.x[i])

class TakeLabel(Transform):
    "Index -> the `i`-th label, as a `TensorCategory`, decoded to its class name"
    def __init__(self, y, vocab): self.y, self.vocab = y, vocab
    def encodes(self, i:int): return TensorCategory(self.y[i])
    def decodes(self, c): return self.vocab[int(c)]

def fastai_tensor_dls(size:int=64, bs:int=64, path=None, seed:int=0, workers:int=0)->DataLoaders:
    "The candidate: fastai `Datasets` over the cached tensors, fastai's batch transforms"
    xt, yt, xv, yv, classes = imagenette_tensors(size, path)
    x, y = torch.cat([xt, xv]), torch.cat([yt, yv])
    splits = [list(range(len(xt))), list(range(len(xt), len(x)))]
    dss = Datasets(list(range(len(x))), [[TakeImage(x)], [TakeLabel(y, classes)]], splits=splits)
    dls = dss.dataloaders(bs=bs, num_workers=workers, seed=seed,
                          after_batch=[IntToFloatTensor(), Flip(p=0.5), Normalize.from_stats(*imagenet_stats)])
    dls.c, dls.vocab = len(classes), classes
    return dls

from fastai.callback.core import Callback, CancelValidException
class _TrainOnly(Callback):
    "Skip validation: the epoch time is the training pass"
    def before_validate(self): raise CancelValidException()

def epoch_seconds(dls, seed:int)->float:
    "One training epoch of a fresh ResNet-18 (no validation), in seconds"
    from torchvision.models import resnet18
    torch.manual_seed(seed)
    learn = Learner(dls, resnet18(num_classes=dls.c), metrics=accuracy)
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3, cbs=[_TrainOnly()])
    return time.perf_counter() - start

def data_seconds(dls)->float:
    "Every training batch fetched and transformed, no model"
    start = time.perf_counter()
    for _ in dls.train: pass
    return time.perf_counter() - start

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', help="an Imagenette folder or .tgz (default: $LTH_DATA, else fastai's download)")
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--repeats', type=int, default=3, help="timed epochs per loader (default: 3)")
    p.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's)")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    loaders = dict(old=lambda: imagenette_dls(a.size, bs=a.bs, path=a.data, seed=0),
                   new=lambda: fastai_tensor_dls(a.size, bs=a.bs, path=a.data, seed=0))
    dls = {k: f() for k, f in loaders.items()}
    print(f"{len(dls['old'].train.dataset)} training images at {a.size} px, batch size {a.bs}, torch threads {torch.get_num_threads()}")
    for k in dls: epoch_seconds(dls[k], 0)                      # warm-up, untimed
    times = {k: dict(epoch=[], data=[]) for k in dls}
    for r in range(a.repeats):
        for k in dls:                                           # alternating: old, new, old, new...
            times[k]['data'].append(data_seconds(dls[k]))
            times[k]['epoch'].append(epoch_seconds(dls[k], r))
    print("\n| loader | data pass (s, median) | epoch (s, median) | epochs (s) |\n|:--|--:|--:|:--|")
    med = {k: {m: statistics.median(v) for m, v in t.items()} for k, t in times.items()}
    for k, t in times.items():
        print(f"| {k} | {med[k]['data']:.1f} | {med[k]['epoch']:.1f} | {', '.join(f'{s:.1f}' for s in t['epoch'])} |")
    ratio = med['new']['epoch'] / med['old']['epoch']
    print(f"\nnew/old epoch time: {ratio:.3f} ({'within' if ratio <= 1.05 else 'NOT within'} 5%)")

if __name__ == '__main__': main()
