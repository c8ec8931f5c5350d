"""A frozen copy of the built-in loaders as they were before they became fastai `Datasets` (lth_nbdev at commit c590bf2,
`lth_nbdev/data.py`: `TensorItems`, `tensor_dls`, `imagenette_dls`): the reference tests/test_loaders.py checks today's
loaders against, batch by batch, and that `bench/loader_epoch.py` times them against. Only the batch-producing code is copied; the images come from today's `imagenette_tensors` (the same
cache). Do not edit."""
import torch
from fastai.data.load import DataLoader
from fastai.data.core import DataLoaders
from fastai.torch_core import default_device
from fastai.losses import CrossEntropyLossFlat
from lth_nbdev.data import imagenette_tensors, imagenet_stats, digits_tensors

class TensorItems:
    "A labelled tensor data set whose items are indices, so a whole batch is gathered in one indexing call"
    loss_func = CrossEntropyLossFlat()     # what fastai's Learner uses when none is given, as for image classification
    def __init__(self, x:torch.Tensor, y:torch.Tensor): self.x, self.y = x, y
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return i
    def batch(self, ids): ids = torch.as_tensor(ids); return self.x[ids], self.y[ids]

def tensor_dls(x_train:torch.Tensor, y_train:torch.Tensor, x_valid:torch.Tensor, y_valid:torch.Tensor,
               bs:int=64, # batch size
               mean=None, std=None, # per-channel statistics to normalize with (after scaling uint8 to [0, 1])
               flip:bool=False, # random horizontal flips of training batches
               seed:int=None, # seeds the shuffling, for reproducible data orders
               device=None,
              )->DataLoaders:
    "fastai `DataLoaders` serving whole batches by indexing the given tensors"
    device = device or default_device()
    def prep(train):
        def after_batch(b):
            x, y = b
            x = x.to(device).float()
            if x_train.dtype == torch.uint8: x = x / 255
            if mean is not None: x = (x - x.new_tensor(mean).view(1, -1, 1, 1)) / x.new_tensor(std).view(1, -1, 1, 1)
            if train and flip:
                f = torch.rand(x.shape[0], device=x.device) < 0.5
                x = torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x)
            return x, y.to(device)
        return after_batch
    def dl(x, y, train):
        ds = TensorItems(x, y)
        # a closure, not the bound method: fastai's `DataLoader.new` (used by `get_preds`) drops bound methods
        res = DataLoader(ds, bs=bs, shuffle=train, drop_last=train, create_batch=lambda ids: ds.batch(ids), after_batch=prep(train))
        if seed is not None: res.rng.seed(seed + (0 if train else 1))
        return res
    dls = DataLoaders(dl(x_train, y_train, True), dl(x_valid, y_valid, False), device=device)
    dls.c = int(max(y_train.max(), y_valid.max())) + 1
    return dls

def imagenette_dls(size:int=64, bs:int=64, path=None, flip:bool=True, seed:int=None, device=None,
                   max_images:int=None, # at most this many training and validation images (for quick runs); None: all
                   progress:bool=False, # progress bars while an archive is unpacked and the images resized
                  )->DataLoaders:
    "Imagenette `DataLoaders` at `size` px, normalized with ImageNet statistics, random flips for training"
    xt, yt, xv, yv, classes = imagenette_tensors(size, path, max_images, progress)
    dls = tensor_dls(xt, yt, xv, yv, bs=bs, mean=imagenet_stats[0], std=imagenet_stats[1], flip=flip, seed=seed, device=device)
    dls.vocab = classes
    return dls

def digits_dls(bs:int=64, seed:int=0, device=None, max_images:int=None)->DataLoaders:
    "The digits `DataLoaders` as they were: normalized with the training set's mean and std, shuffled with `seed`"
    xt, yt, xv, yv = digits_tensors(seed=seed)
    if max_images is not None: xt, yt, xv, yv = xt[:max_images], yt[:max_images], xv[:max_images], yv[:max_images]
    return tensor_dls(xt, yt, xv, yv, bs=bs, mean=(xt.mean(),), std=(xt.std(),), seed=seed, device=device)
