"""Helpers for tests/test_distributed.py (not part of the library): a single-process reference for data-parallel training on
fixed global batches, and the worker script that `torchrun` starts.

The reference: `shard_batches` gives each rank its slice of a fixed sequence of global batches, `SimulatedRanks` runs each
global batch as the ranks' parts, each part with its own batch-norm statistics, and `digits_search` trains either one rank
of a gloo group under `DistributedDataParallel` or the single process."""
import os, sys, json, socket
from pathlib import Path
import torch
import torch.distributed as dist
from torch import nn

def shard_batches(x, y, bs:int, world_size:int, rank:int=None, seed:int=0):
    "Items of a fixed sequence of global batches of `bs * world_size`, for rank `rank` (None: all of them, in order)"
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    g = bs * world_size
    idx = perm[:len(x) // g * g].view(-1, world_size, bs)
    idx = idx.flatten() if rank is None else idx[:, rank].flatten()
    return x[idx], y[idx]

class SimulatedRanks(nn.Module):
    "One process computing what `world_size` DDP ranks compute: each part of a batch with its own batch-norm statistics"
    def __init__(self, module, world_size):
        super().__init__()
        self.module, self.world_size = module, world_size    # named `module`, as in a DDP wrapper
    def forward(self, x):
        if not self.training: return self.module(x)
        bns = [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
        outs = [None] * self.world_size
        for r in reversed(range(self.world_size)):    # rank 0 last: DDP keeps rank 0's running statistics
            for m, (mean, var, nbt) in zip(bns, saved): m.running_mean, m.running_var, m.num_batches_tracked = mean.clone(), var.clone(), nbt.clone()
            outs[r] = self.module(x.chunk(self.world_size)[r])
        return torch.cat(outs)

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def digits_search(rank, world_size, port, out, n_epoch=4, bs=32, lr=0.1, sparsity=60., seed=0):
    "An iterative LTH fit on the digits with the library's SparsifyCallback: one DDP rank of a gloo group, or (rank None) the single-process reference"
    from fastai.learner import Learner
    from fastai.callback.core import Callback
    import fastai.callback.progress
    from fastai.optimizer import SGD
    from lth_nbdev.data import digits_tensors, digits_cnn, tensor_dls
    from lth_nbdev.schedules import iterative
    from lth_nbdev.callback import SparsifyCallback, model_state
    class WrapDDP(Callback):
        order = 11   # where fastai's DistributedTrainer wraps: after SparsifyCallback's before_fit
        def before_fit(self): self.learn.model = nn.parallel.DistributedDataParallel(self.learn.model)
        def after_fit(self): self.learn.model = self.learn.model.module
    torch.set_num_threads(1)
    if rank is not None:
        os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        xt, yt, xv, yv = digits_tensors(seed=0)
        xs, ys = shard_batches(xt, yt, bs, world_size, rank, seed)
        dls = tensor_dls(xs, ys, xv, yv, bs=bs if rank is not None else bs * world_size, mean=(xt.mean(),), std=(xt.std(),), device='cpu')
        dls.train.shuffle = False
        torch.manual_seed(seed)
        net = digits_cnn()
        learn = Learner(dls, net if rank is not None else SimulatedRanks(net, world_size), opt_func=SGD, lr=lr)
        sp = SparsifyCallback(sparsity, method='global', schedule=iterative, start_epoch=1, lth=True, verbose=False, sparsity_column=False)
        with learn.no_bar(), learn.no_logging(): learn.fit(n_epoch, cbs=[sp] + ([WrapDDP()] if rank is not None else []))
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save(dict(masks={n.removeprefix('module.'): m.clone() for n, m in sp.sparsifier.masks.items()}, weights=model_state(net),
                        sparsity=sp.current_sparsity()), Path(out)/('single.pt' if rank is None else f'rank{rank}.pt'))
    finally:
        if rank is not None: dist.destroy_process_group()

def worker(out):
    """Started by torchrun on each rank: `find_ticket` inside fastai's own `learn.distrib_ctx` with a checkpoint (counting
    each rank's checkpoint writes), then a `SparsifyCallback` fit inside `distributed_ctx`; writes `rank{r}.pt`"""
    import warnings; warnings.filterwarnings('ignore')
    torch.set_num_threads(1)
    import lth_nbdev.search as search
    from fastai.torch_core import rank_distrib
    from lth_nbdev.cli import build_learner
    from lth_nbdev.all import find_ticket, SparsifyCallback, large_final, iterative
    from lth_nbdev.distributed import init_distributed, distributed_ctx
    assert init_distributed()
    writes, save = [], search.atomic_save
    search.atomic_save = lambda obj, path: (writes.append(str(path)), save(obj, path))
    rank = rank_distrib()
    learn = build_learner('digits', seed=0)
    with learn.no_bar(), learn.no_logging(), learn.distrib_ctx(cpu=True, sync_bn=False):
        s = find_ticket(learn, rounds=2, epochs=1, lr=3e-3, controls=('random_prune',), seed=0, checkpoint=Path(out)/'search.ckpt', verbose=False)
    learn2 = build_learner('digits', seed=1)
    cb = SparsifyCallback(50, 'weight', 'global', large_final, iterative, start_epoch=1, lth=True, verbose=False)
    with learn2.no_bar(), learn2.no_logging(), distributed_ctx(learn2): learn2.fit(3, 3e-3, cbs=cb)
    torch.save(dict(writes=writes, rows=len(s.table), arms=list(s.table.arm), n=list(s.table.n), masks=s.masks[2],
                    fit_masks={k: v.clone() for k, v in cb.sparsifier.masks.items()}, fit_sparsity=cb.current_sparsity(),
                    end_iter=cb.end_iter), Path(out)/f'rank{rank}.pt')
    dist.destroy_process_group()

if __name__ == '__main__': worker(sys.argv[1])


# --- Issue 36: identical ranks, no mask traffic, exact multi-rank resume (started by tests/test_ddp_ranks.py and bench/gpu_check.py)

def join(rank:int, world:int, port:int, backend:str='gloo'):
    "Join a process group of `world` processes as torchrun would: its environment variables (read by fastai), then the group"
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    if backend == 'nccl': torch.cuda.set_device(rank)   # one GPU per process, as init_distributed sets under torchrun
    if not dist.is_initialized(): dist.init_process_group(backend, rank=rank, world_size=world)

def leave():
    if dist.is_initialized(): dist.destroy_process_group()
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'): os.environ.pop(k, None)

def _callbacks():
    "The harness's fastai callbacks, made here so that this module imports without fastai"
    from fastai.callback.core import Callback
    class WrapDDP(Callback):
        "Wrap the model in DDP where fastai's DistributedTrainer does (order 11), on the model's device: for 2 processes sharing one GPU"
        order = 11
        def before_fit(self): self.learn.model = nn.parallel.DistributedDataParallel(self.learn.model)
        def after_fit(self): self.learn.model = self.learn.model.module
    class BroadcastBuffers(Callback):
        "The names of the buffers DDP broadcasts from rank 0 before every forward (its `named_module_buffers`), at the last training batch"
        order, names = 12, None
        def after_batch(self):
            m = self.learn.model
            if self.training and hasattr(m, 'named_module_buffers'): self.names = list(m.named_module_buffers)
    class Stop(Exception): pass
    class StopAt(Callback):
        "Raise `Stop` when training run number `fit` starts (the dense round is 1): a process that dies between two rounds"
        order = 99
        def __init__(self, fit): self.fit_no, self.fits = fit, 0
        def before_train(self):
            if self.epoch: return
            self.fits += 1
            if self.fits == self.fit_no: raise Stop(f'stopped at fit {self.fits}')
    return WrapDDP, BroadcastBuffers, Stop, StopAt

def _context(learn, wrap:str):
    "fastai's own path (`distributed_ctx`: DistributedTrainer, DistributedDL, FullValidation), or DDP alone (`wrap='ddp'`)"
    import contextlib
    from lth_nbdev.distributed import distributed_ctx
    if wrap == 'fastai': return distributed_ctx(learn)
    learn.add_cb(_callbacks()[0]()); return contextlib.nullcontext(learn)

def criteria_fits(rank, world, port, out, device='cpu', wrap='fastai', backend='gloo', names=None, epochs=2):
    """A pruning fit without `lth` for every criterion (and channel groups with `random` and `movement`), each process from
    its own initial weights and generator (`torch.manual_seed(rank)`); writes `rank{r}.pt`: parameters, masks, the buffers
    DDP broadcast, the sparsity, by case"""
    import warnings; warnings.filterwarnings('ignore')
    torch.set_num_threads(1)
    join(rank, world, port, backend)
    try:
        from fastai.learner import Learner
        from fastai.optimizer import SGD
        import fastai.callback.progress
        from lth_nbdev.data import digits_dls, digits_cnn
        from lth_nbdev.criteria import criteria_by_name
        from lth_nbdev.schedules import agp
        from lth_nbdev.callback import SparsifyCallback
        from lth_nbdev.sparsifier import mask_name
        from lth_nbdev.slim import ChannelGroups
        _, BroadcastBuffers, _, _ = _callbacks()
        if device == 'cuda' and wrap == 'fastai': device = f'cuda:{rank}'
        cases = [(n, 'weight') for n in criteria_by_name] + [('random', 'channel groups'), ('movement', 'channel groups')]
        res = {}
        for crit, gran in cases:
            if names is not None and crit not in names: continue
            dls = digits_dls(bs=32, seed=0, device=device, max_images=256)
            torch.manual_seed(rank)      # each process its own initial weights and random stream: only DDP makes them agree
            learn = Learner(dls, digits_cnn(), opt_func=SGD, lr=0.05)
            g = gran if gran == 'weight' else ChannelGroups(dls.valid.one_batch()[0][:4].cpu())
            cb = SparsifyCallback(50, g, 'global' if gran == 'weight' else 'local', criteria_by_name[crit], agp, start_epoch=1,
                                  verbose=False, sparsity_column=False)
            bb = BroadcastBuffers()
            with learn.no_bar(), learn.no_logging(), _context(learn, wrap): learn.fit(epochs, cbs=[cb, bb])
            net = learn.model
            res[f'{crit}/{gran}'] = dict(params={n: p.detach().cpu().clone() for n, p in net.named_parameters()},
                                          masks={n: b.cpu().clone() for n, b in net.named_buffers() if n.endswith(mask_name)},
                                          broadcast=bb.names, sparsity=cb.current_sparsity())
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save(res, Path(out)/f'rank{rank}.pt')
    finally: leave()

def resume_search(rank, world, port, out, name, stop_fit=None, device='cpu', backend='gloo', wrap='fastai', granularity='weight'):
    """`find_ticket` (2 rounds of 1 epoch, checkpointed) on random flips drawn from each process's own seed; with `stop_fit`,
    stopped when that training run starts. `name`: 'straight' (its own checkpoint), 'stopped' or 'resumed' (one checkpoint
    for both); writes `{name}{rank}.pt` with the per-image results, masks and weights"""
    import warnings; warnings.filterwarnings('ignore')
    torch.set_num_threads(1)
    join(rank, world, port, backend)
    try:
        from fastai.learner import Learner
        from fastai.optimizer import SGD
        import fastai.callback.progress
        from lth_nbdev.data import digits_tensors, digits_cnn, tensor_dls
        from lth_nbdev.search import find_ticket
        from lth_nbdev.callback import model_state
        from lth_nbdev.slim import ChannelGroups
        _, _, Stop, StopAt = _callbacks()
        if device == 'cuda' and wrap == 'fastai': device = f'cuda:{rank}'
        xt, yt, xv, yv = digits_tensors(seed=0)
        dls = tensor_dls(xt[:512], yt[:512], xv, yv, bs=32, mean=(xt.mean(),), std=(xt.std(),), flip=True, seed=0, device=device)
        torch.manual_seed(0)
        learn = Learner(dls, digits_cnn(), opt_func=SGD, lr=0.05, cbs=StopAt(stop_fit) if stop_fit else None)
        torch.manual_seed(100 + rank)    # each process its own flips, as a torchrun script seeding each process with its rank
        ckpt = Path(out)/('straight.ckpt' if name == 'straight' else 'stopped.ckpt')
        try:
            with learn.no_bar(), learn.no_logging(), _context(learn, wrap):
                g = granularity if granularity == 'weight' else ChannelGroups(xv[:4])   # channel groups: SyncBatchNorm on GPUs
                s = find_ticket(learn, rounds=2, epochs=1, lr=0.05, fit='fit', checkpoint=ckpt, seed=0, verbose=False, granularity=g,
                                method='global' if granularity == 'weight' else 'local')
        except Stop: return
        torch.save(dict(correct={k: torch.as_tensor(v) for k, v in s.correct.items()}, masks=s.masks,
                        weights={k: v.cpu() for k, v in model_state(learn.model).items()}), Path(out)/f'{name}{rank}.pt')
    finally: leave()
