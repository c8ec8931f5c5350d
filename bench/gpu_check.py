"""The GPU check of issue 36: what the CPU tests can only stand in for, checked on CUDA, in one table.

    python bench/gpu_check.py                                   # one or more CUDA devices: under 5 minutes
    torchrun --standalone --nproc_per_node 2 bench/gpu_check.py # the same: rank 0 runs it, the other process waits

It has NOT run on a GPU yet (no GPU was lent to the session that wrote it). On a machine without CUDA it is a dry run:
each row says what it would check on CUDA, and the checks that a CPU can run in seconds run (on the CPU, or on torch's
meta device), marked `cpu`.

Checks (items of issue 36):
  1. a channel-group ticket from a CPU example, trained on the GPU, slimmed with that CPU example;
  2. identical processes: 2 processes (nccl on 2 GPUs; gloo on one GPU shared by both), a pruning fit for every
     criterion, each process from its own initial weights: parameters and masks equal on both;
  3. SyncBatchNorm: a channel-group fit under the conversion `distributed_ctx` makes on GPUs keeps its masks, rewinds to
     zero BN scales, and (2 GPUs) a channel-group search on 2 processes with real SyncBatchNorm resumes exactly;
  4. the buffers DDP broadcasts before every forward: the batch-norm statistics, no mask;
  5. a search on 2 processes stopped after round 1 and resumed: the same per-image results, masks and weights;
  6. fastai's to_non_native_fp16: the pruned weights are zero after every step and at the end;
  7. host syncs (torch.cuda.set_sync_debug_mode('warn')) per training batch under `agp`, against a dense fit, and in
     one global cut of ResNet-18;
  plus the epoch time against dense at 64 px and 160 px (ResNet-18, random images of Imagenette's shape, and the data
  loader's own pass), and one global cut of 1.07 billion weights.
"""
import argparse, contextlib, os, statistics, sys, time, traceback, warnings
from pathlib import Path
import torch
from torch import nn

here = Path(__file__).resolve().parent
sys.path[:0] = [str(here.parent), str(here.parent/'tests')]   # the library, and the 2-process workers of tests/test_ddp_ranks.py
warnings.filterwarnings('ignore', category=FutureWarning)

rows = []
def row(item, check, where, result, value=''):
    rows.append((item, check, where, result, value))
    print(f"  [{item}] {check}: {result} {value}", flush=True)

def run_check(item, check, where, f):
    "Run `f() -> (ok, value)` and record a row; an exception is a row too"
    t = time.time()
    try: ok, value = f()
    except Exception as e:
        traceback.print_exc()
        return row(item, check, where, 'ERROR', f"{type(e).__name__}: {str(e)[:120]}")
    row(item, check, where, 'pass' if ok is True else 'FAIL' if ok is False else 'measured', f"{value} ({time.time() - t:.1f} s)")

def sync(dev):
    if torch.device(dev).type == 'cuda': torch.cuda.synchronize(dev)

def _learner(dls, model, **kw):
    from fastai.learner import Learner
    from fastai.optimizer import SGD
    import fastai.callback.progress   # no_bar
    return Learner(dls, model, opt_func=SGD, lr=0.05, **kw)

# --- 1. the example follows the model

def structured_on(dev):
    from lth_nbdev.all import digits_dls, digits_cnn, SparsifyCallback, ChannelGroups, slim_model, large_final, iterative
    dls = digits_dls(bs=64, seed=0, device=dev, max_images=512)
    x = dls.valid.one_batch()[0][:4].cpu()
    torch.manual_seed(0)
    learn = _learner(dls, digits_cnn())
    cb = SparsifyCallback(50, ChannelGroups(x), 'local', large_final, iterative, start_epoch=1, lth=True, verbose=False, sparsity_column=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, cbs=cb)
    slim = slim_model(learn.model.eval(), x)
    xb = dls.valid.one_batch()[0]
    with torch.no_grad(): same = bool((slim(xb).argmax(1) == learn.model(xb).argmax(1)).all())
    return same and abs(cb.current_sparsity() - 50) < 1e-6, f"sparsity {cb.current_sparsity():.2f}%, slim predictions the same: {same}"

def structured_meta():
    from lth_nbdev.all import digits_cnn, channel_groups, ChannelGroups
    x = torch.randn(2, 1, 8, 8)
    g_cpu, meta = channel_groups(digits_cnn(), x), digits_cnn().to('meta')
    g = channel_groups(meta, x)
    devs = {k.device.type for k in ChannelGroups(x).sparsifier(meta).masks.values()}
    same = [(a.root, a.size) for a in g] == [(a.root, a.size) for a in g_cpu]
    return same and devs == {'meta'}, f"{len(g)} groups traced on a meta model from a CPU batch, masks on {devs}"

# --- 2, 3, 4, 5 on two processes

def _spawn(fn, *args):
    import torch.multiprocessing as mp
    from distributed_harness import free_port
    mp.spawn(fn, args=(2, free_port(), *args), nprocs=2)

def _two_process_mode():
    "(device, wrap, backend): nccl through fastai's DistributedTrainer on 2 GPUs; gloo and DDP alone on one GPU shared by both"
    return ('cuda', 'fastai', 'nccl') if torch.cuda.device_count() >= 2 else ('cuda', 'ddp', 'gloo')

def ranks_identical(tmp, dev, wrap, backend):
    from distributed_harness import criteria_fits
    _spawn(criteria_fits, str(tmp), dev, wrap, backend)
    r0, r1 = (torch.load(tmp/f'rank{r}.pt') for r in (0, 1))
    bad = [c for c in r0 if not (all(torch.equal(r0[c]['params'][n], r1[c]['params'][n]) for n in r0[c]['params'])
                                  and all(torch.equal(r0[c]['masks'][n], r1[c]['masks'][n]) for n in r0[c]['masks']))]
    off = [c for c in r0 if abs(r0[c]['sparsity'] - 50) > 0.5]
    buffers = {len(r0[c]['broadcast'] or []) for c in r0}
    masks_sent = sorted({n for c in r0 for n in (r0[c]['broadcast'] or []) if n.endswith('sparsity_mask')})
    ranks = (not bad and not off, f"{len(r0) - len(bad)}/{len(r0)} cases identical on both processes" + (f"; differ: {bad}" if bad else '')
             + (f"; off target: {off}" if off else ''))
    ddp = (buffers == {9} and not masks_sent, f"DDP broadcasts {sorted(buffers)} buffers a forward, masks among them: {masks_sent or 'none'}")
    return ranks, ddp

def resume_two(tmp, dev, wrap, backend, granularity='weight'):
    from distributed_harness import resume_search
    for name, stop in (('straight', None), ('stopped', 3), ('resumed', None)):
        _spawn(resume_search, str(tmp), name, stop, dev, backend, wrap, granularity)
    same = []
    for r in (0, 1):
        s, res = torch.load(tmp/f'straight{r}.pt'), torch.load(tmp/f'resumed{r}.pt')
        same.append(all(torch.equal(s['correct'][k], res['correct'][k]) for k in s['correct'])
                    and all(torch.equal(s['masks'][2][k], res['masks'][2][k]) for k in s['masks'][2])
                    and all(torch.equal(s['weights'][k], res['weights'][k]) for k in s['weights']))
    return all(same), f"per-image results, masks and weights equal to the uninterrupted run on rank 0: {same[0]}, rank 1: {same[1]}"

# --- 3. SyncBatchNorm in one process (the conversion distrib_ctx makes; without a process group it computes as BatchNorm)

def syncbn_one(dev):
    from fastai.callback.core import Callback
    from lth_nbdev.all import digits_dls, digits_cnn, SparsifyCallback, ChannelGroups, large_final, iterative, mask_name, bias_mask_name
    class ConvertBatchNorm(Callback):
        order = 11
        def before_fit(self): self.learn.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.learn.model)
    dls = digits_dls(bs=64, seed=0, device=dev, max_images=512)
    torch.manual_seed(0)
    learn = _learner(dls, digits_cnn())
    cb = SparsifyCallback(50, ChannelGroups(dls.valid.one_batch()[0][:4].cpu()), 'local', large_final, iterative, start_epoch=1, lth=True,
                          reset_end=True, verbose=False, sparsity_column=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(3, cbs=[cb, ConvertBatchNorm()])
    mods = dict(learn.model.named_modules())
    bns = [m for m in mods.values() if isinstance(m, nn.SyncBatchNorm)]
    current = all(cb.sparsifier.layers[n] is mods[n] for n in cb.sparsifier.layers)
    zero = all(not m.weight[~getattr(m, mask_name)].any() and not m.bias[~getattr(m, bias_mask_name)].any() for m in bns)
    return len(bns) == 3 and current and zero, f"{len(bns)} SyncBatchNorm with masks; sparsifier modules current: {current}; removed scales 0 after the rewind: {zero}"

# --- 6. non-native fp16

def fp16_non_native(dev, lth):
    from fastai.callback.core import Callback
    import fastai.callback.fp16   # Learner.to_non_native_fp16
    from lth_nbdev.all import digits_dls, digits_cnn, SparsifyCallback, large_final, one_shot, mask_name
    class Spy(Callback):
        order, bad = 11, 0
        def after_step(self):
            for m in cb.sparsifier.layers.values(): Spy.bad += int((m.weight.detach()[~getattr(m, mask_name)] != 0).sum())
    torch.manual_seed(0)
    learn = _learner(digits_dls(bs=64, seed=0, device=dev, max_images=512), digits_cnn()).to_non_native_fp16()
    cb = SparsifyCallback(50, 'weight', 'global', large_final, one_shot, start_epoch=1, lth=lth, verbose=False, sparsity_column=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, cbs=[cb, Spy()])
    layers = cb.sparsifier.layers.values()
    zeros = 100 * sum(int((m.weight == 0).sum()) for m in layers) / sum(m.weight.numel() for m in layers)
    return Spy.bad == 0 and abs(zeros - 50) < 0.01, f"zero weights {zeros:.2f}% (target 50), pruned weights nonzero after a step: {Spy.bad}"

# --- 7. host syncs

@contextlib.contextmanager
def counting_syncs():
    "Count the synchronizing CUDA calls torch warns about inside the block: `yield`s a list that fills with their warnings"
    seen = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try: yield seen
        finally:
            torch.cuda.set_sync_debug_mode(0)
            seen.extend(x for x in w if 'synchroniz' in str(x.message).lower())

def synthetic_dls(size, dev, n_train=1024, n_valid=256, bs=64):
    from lth_nbdev.data import tensor_dls, imagenet_stats
    g = torch.Generator().manual_seed(0)
    xt = torch.randint(0, 256, (n_train, 3, size, size), dtype=torch.uint8, generator=g)
    xv = torch.randint(0, 256, (n_valid, 3, size, size), dtype=torch.uint8, generator=g)
    yt, yv = torch.randint(0, 10, (n_train,), generator=g), torch.randint(0, 10, (n_valid,), generator=g)
    return tensor_dls(xt, yt, xv, yv, bs=bs, mean=imagenet_stats[0], std=imagenet_stats[1], flip=True, seed=0, device=dev)

def syncs_per_batch(dev):
    from fastai.callback.core import Callback
    from torchvision.models import resnet18
    from lth_nbdev.all import SparsifyCallback, large_final, agp
    class PerBatch(Callback):
        "Sync warnings per training batch (the recorder's and the other callbacks' included)"
        order = 99
        def __init__(self, w): self.w, self.counts, self.at = w, [], 0
        def before_batch(self): self.at = len(self.w)
        def after_batch(self):
            if self.training: self.counts.append(sum('synchroniz' in str(x.message).lower() for x in self.w[self.at:]))
    res = {}
    for arm in ('dense', 'agp'):
        dls = synthetic_dls(64, dev, n_train=512, n_valid=64)
        torch.manual_seed(0)
        learn = _learner(dls, resnet18(num_classes=10))
        cbs = [SparsifyCallback(50, 'weight', 'global', large_final, agp, start_epoch=0, verbose=False, sparsity_column=False)] if arm == 'agp' else []
        with warnings.catch_warnings(record=True) as w, learn.no_bar(), learn.no_logging():
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try: pb = PerBatch(w); learn.fit(1, cbs=cbs + [pb])
            finally: torch.cuda.set_sync_debug_mode(0)
        res[arm] = statistics.median(pb.counts) if pb.counts else float('nan')
    return None, f"median syncs a training batch: dense {res['dense']}, agp {res['agp']} (each batch of agp cuts)"

def syncs_per_cut(dev):
    from torchvision.models import resnet18
    from lth_nbdev.all import Sparsifier
    torch.manual_seed(0)
    net = resnet18(num_classes=10).to(dev)
    sp = Sparsifier(net, 'weight', 'global')
    sp.sparsify_model(20)   # warm
    with counting_syncs() as seen: sp.sparsify_model(50)
    return len(seen) <= 10, f"{len(seen)} syncing calls in one global cut of ResNet-18 (issue 36 item 7: at most 10)"

# --- epoch overhead and the 1B cut

def epoch_overhead(dev, size):
    from fastai.callback.core import Callback
    from torchvision.models import resnet18
    from lth_nbdev.all import SparsifyCallback, large_final, agp
    class EpochTimes(Callback):
        order = 99
        def before_epoch(self): sync(dev); self.t = time.perf_counter()
        def after_epoch(self): sync(dev); self.times.append(time.perf_counter() - self.t)
    dls = synthetic_dls(size, dev)
    sync(dev); t = time.perf_counter()
    for _ in dls.train: pass
    sync(dev); data = time.perf_counter() - t
    med = {}
    for arm in ('dense', 'agp'):
        torch.manual_seed(0)
        learn = _learner(dls, resnet18(num_classes=10))
        et = EpochTimes(); et.times = []
        cbs = [SparsifyCallback(50, 'weight', 'global', large_final, agp, start_epoch=0, verbose=False, sparsity_column=False)] if arm == 'agp' else []
        with learn.no_bar(), learn.no_logging(): learn.fit(3, cbs=cbs + [et])
        med[arm] = statistics.median(et.times[1:])   # the first epoch warms cudnn and the allocator
    return None, (f"epoch (1024 images, bs 64, median of epochs 2-3): dense {med['dense']:.2f} s, agp {med['agp']:.2f} s, "
                  f"ratio {med['agp'] / med['dense']:.2f}; the loader's own pass {data:.2f} s")

def cut_1b(dev, layers=16, side=8192):
    from lth_nbdev.all import Sparsifier
    torch.manual_seed(0)
    with torch.device(dev): net = nn.Sequential(*[nn.Linear(side, side, bias=False) for _ in range(layers)])
    n = sum(p.numel() for p in net.parameters())
    sp = Sparsifier(net, 'weight', 'global', layer_type=nn.Linear)
    if torch.device(dev).type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
    sync(dev); t = time.perf_counter()
    sp.sparsify_model(50)
    sync(dev); s = time.perf_counter() - t
    got = sp.global_sparsity()
    mem = f", peak {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB" if torch.device(dev).type == 'cuda' else ''
    return abs(got - 50) < 1e-6, f"{n:,} weights cut to {got:.4f}% in {s:.2f} s{mem}"

# ---

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--skip-processes', action='store_true', help='leave out the 2-process checks (items 2, 3 on 2 GPUs, 4, 5)')
    a = p.parse_args()
    if int(os.environ.get('WORLD_SIZE', '1')) > 1 and int(os.environ.get('RANK', '0')) != 0:
        return   # under torchrun rank 0 runs the check; the 2-process checks start their own process groups
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'MASTER_PORT', 'TORCHELASTIC_RUN_ID'):
        os.environ.pop(k, None)   # this process is not one of torchrun's group: the checks make theirs
    import tempfile
    start, cuda = time.time(), torch.cuda.is_available()
    print(f"torch {torch.__version__}; " + (f"CUDA: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if cuda else
          "no CUDA device: a DRY RUN, saying what would be checked on CUDA and running what a CPU can in seconds"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix='gpu_check_'))
    if cuda:
        dev = 'cuda:0'
        run_check(1, 'channel groups from a CPU example, trained on CUDA, slimmed', dev, lambda: structured_on(dev))
        if not a.skip_processes:
            d, wrap, backend = _two_process_mode()
            where = f"2 processes, {backend}" + (' on one GPU' if wrap == 'ddp' else ' on 2 GPUs')
            try:
                ranks, ddp = ranks_identical(tmp/'ranks', d, wrap, backend)
                row(2, 'every criterion: parameters and masks equal on both processes', where, 'pass' if ranks[0] else 'FAIL', ranks[1])
                row(4, 'DDP broadcasts no mask buffer', where, 'pass' if ddp[0] else 'FAIL', ddp[1])
            except Exception as e: traceback.print_exc(); row('2, 4', 'identical processes, no mask traffic', where, 'ERROR', repr(e)[:120])
            run_check(5, 'search stopped after round 1, resumed: exact', where, lambda: resume_two(tmp/'resume', d, wrap, backend))
            if torch.cuda.device_count() >= 2:
                run_check(3, 'channel-group search with real SyncBatchNorm, resumed: exact', where,
                          lambda: resume_two(tmp/'resume_syncbn', d, wrap, backend, 'channel groups'))
            else: row(3, 'channel-group search with real SyncBatchNorm, resumed', where, 'skipped', 'needs 2 GPUs (nccl)')
        run_check(3, 'SyncBatchNorm conversion keeps the channel masks, rewinds exact', dev, lambda: syncbn_one(dev))
        for lth in (False, True): run_check(6, f'to_non_native_fp16 keeps pruned weights at 0 (lth={lth})', dev, lambda: fp16_non_native(dev, lth))
        run_check(7, 'host syncs in one global cut of ResNet-18', dev, lambda: syncs_per_cut(dev))
        run_check(7, 'host syncs per training batch, ResNet-18 at 64 px', dev, lambda: syncs_per_batch(dev))
        for size in (64, 160): run_check('-', f'epoch time against dense, ResNet-18 at {size} px', dev, lambda: epoch_overhead(dev, size))
        run_check('-', 'global cut of 1B weights (16 x Linear(8192, 8192))', dev, lambda: cut_1b(dev))
    else:
        run_check(1, 'a meta-device model traced from a CPU example (stands in for CUDA)', 'cpu', structured_meta)
        run_check(3, 'SyncBatchNorm conversion keeps the channel masks, rewinds exact', 'cpu', lambda: syncbn_one('cpu'))
        run_check('-', 'global cut of 16M weights (16 x Linear(1024, 1024)), the 1B cut scaled down', 'cpu', lambda: cut_1b('cpu', 16, 1024))
        for item, what in ((1, 'a channel-group ticket trained on CUDA from a CPU example, slimmed'),
                           (2, 'every criterion on 2 CUDA processes: parameters and masks equal (tests/test_ddp_ranks.py does it on CPUs)'),
                           (3, 'a channel-group search with real SyncBatchNorm on 2 GPUs, resumed exactly'),
                           (4, 'DDP on CUDA broadcasts no mask buffer (tests/test_ddp_ranks.py on CPUs)'),
                           (5, 'a search on 2 CUDA processes stopped and resumed exactly (tests/test_ddp_ranks.py on CPUs)'),
                           (6, "fastai's to_non_native_fp16 (CUDA only) keeps pruned weights at 0 (tests/test_devices.py runs its callback on a CPU)"),
                           (7, "host syncs per cut and per agp batch, with torch.cuda.set_sync_debug_mode('warn')"),
                           ('-', 'epoch time with agp against dense, ResNet-18 at 64 and 160 px, and the loader\'s own pass'),
                           ('-', 'the global cut of 1.07B weights on the GPU: seconds and peak memory')):
            row(item, what, 'cuda', 'would check', '(dry run)')
    print(f"\nGPU check, {time.time() - start:.0f} s" + ('' if cuda else ' (dry run on a CPU)'))
    w = [max(len(str(r[i])) for r in rows + [('item', 'check', 'where', 'result', 'value')]) for i in range(4)]
    print(f"| {'item':<{w[0]}} | {'check':<{w[1]}} | {'where':<{w[2]}} | {'result':<{w[3]}} | value |")
    print(f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 2)}|{'-' * (w[3] + 2)}|-------|")
    for r in rows: print(f"| {str(r[0]):<{w[0]}} | {r[1]:<{w[1]}} | {r[2]:<{w[2]}} | {r[3]:<{w[3]}} | {r[4]} |")
    return 0 if all(r[3] in ('pass', 'measured', 'would check', 'skipped') for r in rows) else 1

if __name__ == '__main__': sys.exit(main())
