"""Host syncs of a global cut (issue 36, item 7): the sync-free path a GPU takes, counted on the CPU.

On a GPU, every value the host reads back waits for all the work queued before it; under a gradual schedule a cut
runs every batch, so its reads are paid every batch. No GPU is needed to count them: the sync-free path is forced
on the CPU (`lth_nbdev.cut.sync_free = True`), and a `TorchDispatchMode` sees every aten op the cut runs. An op is
counted as a sync when, on a CUDA tensor, it makes the host wait for the device:

- `aten._local_scalar_dense`: what `.item()`, `int(t)`, `float(t)`, `bool(t)` (and `if t:`) dispatch to; one value
  copied to the host.
- `aten.nonzero`, `aten.masked_select`, and `aten.index` / `aten.index_put_` with a bool index (computed through
  `nonzero`): the output's size is data, which the host must read to allocate it.
- `aten.unique_consecutive`, `aten._unique2`, `aten.unique_dim`: the same, the number of distinct values.
- `aten.repeat_interleave` without `output_size`: the output's length is the sum of the repeats, read back.
- `aten.bincount`: CUDA's kernel reads its input's minimum and maximum back to size the output.
- `aten.histc` with `min == max` (its default): reads the range back the same way.
- `aten.equal`, `aten.is_nonzero`, `aten.allclose`: return a Python bool.
- `aten.lift_fresh`: a tensor made from Python data (`torch.tensor([...])`). On a GPU this is a copy from pageable
  host memory, which torch makes blocking (the stream is synchronized after it). On the CPU we cannot tell which
  device it was meant for, so each one counts (an overcount of the CPU path; the sync-free path makes none).
- `Tensor.tolist()` (seen by a `TorchFunctionMode`: a CPU tensor's is not dispatched at all): on a GPU, a copy of
  the whole tensor to the host.

Not counted, because they never wait: elementwise ops, comparisons with 0-d tensors, `cumsum`, `searchsorted`,
`index_add_`, `index_select`, `max`, `sort`, `_foreach_mul_`, and `fill_` or `select` with Python numbers.

The same counts on a GPU would come from `torch.cuda.set_sync_debug_mode('warn')`; this file checks on any machine
that the number does not creep back. Run with `-s` to see the counts.
"""
import collections, copy, math
from contextlib import contextmanager
import pytest, torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.models import resnet18
import lth_nbdev.cut as C, lth_nbdev.sparsifier as S
from cut_helpers import cut_path
from lth_nbdev.sparsifier import Sparsifier, mask_name
from lth_nbdev.criteria import large_final, small_final

aten = torch.ops.aten
ALWAYS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten.unique_consecutive.default,
          aten._unique2.default, aten.unique_dim.default, aten.bincount.default, aten.equal.default, aten.is_nonzero.default,
          aten.allclose.default, aten.lift_fresh.default}
INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}

def _histc_range(args, kwargs)->tuple:
    "`histc`'s (min, max), 0 and 0 when not given"
    return (args[2] if len(args) > 2 else kwargs.get('min', 0), args[3] if len(args) > 3 else kwargs.get('max', 0))

class Syncs(TorchDispatchMode):
    "Count, by op, the aten ops that would make the host wait for a CUDA device (see the module's docstring)"
    def __init__(self): super().__init__(); self.by_op, self.ops = collections.Counter(), 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        name = func.name()
        if func in ALWAYS: self.by_op[name] += 1
        elif func in INDEXING and any(i is not None and i.dtype == torch.bool for i in args[1]): self.by_op[name + ' (bool index)'] += 1
        elif func.overloadpacket is aten.repeat_interleave and kwargs.get('output_size') is None: self.by_op[name] += 1
        elif func.overloadpacket is aten.histc and _histc_range(args, kwargs) == (0, 0): self.by_op[name] += 1
        return func(*args, **kwargs)

class Lists(TorchFunctionMode):
    "Count `Tensor.tolist()` calls into the `Syncs` given"
    def __init__(self, syncs): super().__init__(); self.syncs = syncs
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist: self.syncs.by_op['Tensor.tolist'] += 1
        return func(*args, **(kwargs or {}))

@contextmanager
def counting():
    "Count the syncing ops run on this thread in the block: `.total`, `.by_op`, `.ops`"
    s = Syncs()
    with s, Lists(s): yield s
    s.total = sum(s.by_op.values())


@pytest.fixture(autouse=True)
def one_thread():
    "The CPU path runs its slices on a pool of threads, whose ops a dispatch mode does not see: 1 thread, as on a GPU"
    before = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def resnet(seed=0, **kw):
    torch.manual_seed(seed)
    return resnet18(num_classes=10, **kw)

def test_a_global_cut_of_resnet18_syncs_at_most_10_times(monkeypatch):
    "The default global weight cut of ResNet-18 (large_final, Conv2d layers, keep one weight a layer), at rising targets"
    counts = {}
    for path in (False, True):
        sp = Sparsifier(resnet(), 'weight', 'global', large_final)
        with cut_path(path):
            for s in (10, 50, 80, 95):
                with counting() as c: sp.sparsify_model(s)
                counts[path, s] = c
    for s in (10, 50, 80, 95):
        cpu, free = counts[False, s], counts[True, s]
        print(f"\n{s}%: CPU path {cpu.total} syncs in {cpu.ops} ops {dict(cpu.by_op)}; sync-free path {free.total} in {free.ops} {dict(free.by_op)}")
        assert free.total <= 10
    monkeypatch.setattr(S, 'chunk_size', 2**14)   # 698 slices instead of 26: the count does not grow with them
    sp = Sparsifier(resnet(), 'weight', 'global', large_final)
    with cut_path(True):
        for s in (10, 50):
            with counting() as c: sp.sparsify_model(s)
            print(f"{s}%, slices of 2^14: sync-free path {c.total} syncs in {c.ops} ops")
            assert c.total <= 10

def test_both_paths_give_the_same_masks_and_weights():
    "ResNet-18 cut globally twice (no regrowth in between), on each path: the same masks, the same zeroed weights"
    out = {}
    for path in (False, True):
        model = resnet(); sp = Sparsifier(model, 'weight', 'global', large_final)
        with cut_path(path):
            for s in (40, 90): sp.sparsify_model(s)
        out[path] = {n: (getattr(m, mask_name).clone(), m.weight.detach().clone()) for n, m in sp.layers.items()}
    for n in out[False]:
        assert torch.equal(out[False][n][0], out[True][n][0]) and torch.equal(out[False][n][1], out[True][n][1])

def test_the_step_after_a_cut_remakes_nothing():
    "Under a gradual schedule: cut, step, cut, step... After the first step's copies, the cut keeps them current: no sync, one op"
    sp = Sparsifier(resnet(), 'weight', 'global', large_final)
    with cut_path(True):
        sp.sparsify_model(5)
        with counting() as first: sp.apply_masks()        # the float copies are made: one read for all layers
        assert first.total <= 1 and len(sp.step_masks.factors) == len(sp.layers)
        for s in (6, 7, 8):
            sp.sparsify_model(s)
            with counting() as step: sp.apply_masks()
            assert step.total == 0 and step.ops == 1, (step.by_op, step.ops)   # the one fused multiply
            for f, m in zip(sp.step_masks.factors, sp.layers.values()): assert torch.equal(f.bool(), getattr(m, mask_name))
    print(f"\nfirst step: {first.total} sync in {first.ops} ops; later steps: {step.total} syncs in {step.ops} op")

def test_a_cut_that_would_empty_layers_protects_them_with_few_reads():
    "Two convolutions scaled down 10^4 times would be emptied by a 50% cut: each round of protection reads twice more; the masks are the CPU path's"
    out, counts = {}, {}
    for path in (False, True):
        model = resnet()
        with torch.no_grad(): model.layer1[0].conv1.weight.mul_(1e-4); model.layer3[1].conv2.weight.mul_(1e-4)
        sp = Sparsifier(model, 'weight', 'global', large_final)
        with cut_path(path), counting() as c: sp.sparsify_model(50)
        out[path], counts[path] = {n: k.clone() for n, k in sp.masks.items()}, c
    for n in out[False]: assert torch.equal(out[False][n], out[True][n])
    assert [int(k.sum()) for n, k in out[True].items() if n in ('layer1.0.conv1', 'layer3.1.conv2')] == [1, 1]   # one weight kept in each
    print(f"\nCPU path {counts[False].total} syncs; sync-free path {counts[True].total} {dict(counts[True].by_op)}")
    assert counts[True].total == 3   # the cut's one read, then one round: the layers' best entries, and whether any other is at risk now

def test_lowest_k_masks_without_keep_one_never_syncs():
    "The plain-tensor cut (ChannelSparsifier, round_to) on the sync-free path: no read back at all, exact"
    g = torch.Generator().manual_seed(0)
    scores = [torch.randn(3000, generator=g).round(), torch.randn(500, generator=g)]
    with cut_path(True), counting() as c: keep = C.lowest_k_masks(scores, 1700, chunk=256)
    assert c.total == 0, c.by_op
    with cut_path(False): assert all(torch.equal(a, b) for a, b in zip(keep, C.lowest_k_masks(scores, 1700, chunk=256)))

def test_every_tensor_is_made_on_the_model_device():
    "On the sync-free path too, nothing is allocated on the default device (a GPU model under a CPU default, or the reverse)"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6))
    ref = Sparsifier(copy.deepcopy(model), 'weight', 'global'); ref.sparsify_model(40); ref.sparsify_model(70)
    sp = Sparsifier(model, 'weight', 'global')
    scores = torch.arange(6.)
    with cut_path(True), torch.device('meta'):
        sp.sparsify_model(40); sp.apply_masks(); sp.sparsify_model(70); sp.apply_masks()
        keep = C.lowest_k_masks([scores], 2)[0]
    assert keep.device.type == 'cpu' and keep.tolist() == [False, False] + [True] * 4
    for n in ref.masks: assert torch.equal(sp.masks[n], ref.masks[n]) and torch.equal(sp.layers[n].weight, ref.layers[n].weight)

@pytest.mark.parametrize('bits', [0x7F800000, 0x7FC00000, 0xFF800000 - 2**32, 0xFFFF0000 - 2**32], ids=['+inf', '+nan', '-inf', '-nan-payload'])
def test_non_finite_scores_are_refused_before_anything_is_written(bits):
    "The one read of the sync-free path carries the NaN/inf check: it raises with the checker's message, masks untouched"
    def scores_with_one_bad(w, init):
        s = w.abs().clone(); s.view(-1).view(torch.int32)[5] = bits
        return s
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3))
    sp = Sparsifier(model, 'weight', 'global', scores_with_one_bad)
    with cut_path(True), pytest.raises(ValueError, match='NaN or infinite'): sp.sparsify_model(50)
    assert all(bool(k.all()) for k in sp.masks.values())

def test_crowded_bin_counts_stay_exact_past_float32():
    "The sync-free histograms and tie counts are exact beyond 2^24 tied keys too"
    n = 2**24 + 1                                    # n copies of 1.0, then 5 of the next float up: one top bin, two low bins
    s = torch.ones(n + 5); s[n:] = torch.nextafter(torch.tensor(1.), torch.tensor(2.))
    with cut_path(True): keep = C.lowest_k_masks([s], n + 1)[0]
    assert int((~keep).sum()) == n + 1 and not keep[:n + 1].any() and bool(keep[n + 1:].all())

class Copies(TorchDispatchMode):
    "The largest tensor copied (`clone`, a `reshape` that cannot view) during the block, and the bytes copied in all"
    def __init__(self): super().__init__(); self.largest, self.bytes = 0, 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is aten.clone.default: self.largest, self.bytes = max(self.largest, out.numel()), self.bytes + out.numel() * out.element_size()
        return out

@pytest.mark.parametrize('path', [False, True])
def test_channels_last_weights_are_cut_a_slice_at_a_time(path):
    "A channels_last ResNet-18 (issue 36, 8): the same masks as a contiguous one, and no copy of a whole layer per slice"
    masks, weights = {}, {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        model = resnet().to(memory_format=fmt)
        sp = Sparsifier(model, 'weight', 'global', criteria='movement')   # an init-based criterion: the init snapshot is sliced too
        torch.manual_seed(1)
        with torch.no_grad():   # noise drawn in the weights' logical order, the same for both formats
            for m in sp.layers.values(): m.weight.add_(torch.randn(m.weight.shape) * 0.01)
        with cut_path(path), Copies() as copies: sp.sparsify_model(50)
        masks[fmt] = {n: k.contiguous() for n, k in sp.masks.items()}
        weights[fmt] = {n: m.weight.detach().contiguous() for n, m in sp.layers.items()}
        if fmt is torch.channels_last:
            assert copies.largest <= S.chunk_size + 2 * 512 * 9, copies.largest   # a slice and two part filters at most, not a 2.4M-weight layer
            print(f"\nchannels_last, {'sync-free' if path else 'CPU'} path: largest copy {copies.largest} entries, {copies.bytes / 1e6:.1f} MB copied")
    for n in masks[torch.contiguous_format]:
        assert torch.equal(masks[torch.contiguous_format][n], masks[torch.channels_last][n])
        assert torch.equal(weights[torch.contiguous_format][n], weights[torch.channels_last][n])

class Foreach(TorchDispatchMode):
    "The dtypes of the lists of every `_foreach_mul_` run in the block"
    def __init__(self): super().__init__(); self.calls = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is aten._foreach_mul_: self.calls.append(({t.dtype for t in args[0]}, {t.dtype for t in args[1]}))
        return func(*args, **(kwargs or {}))

def test_off_the_cpu_masks_are_applied_by_float_copies():
    "A multiply of float weights by bool masks leaves CUDA's fused foreach kernels: off the CPU, every `_foreach_mul_` is float x float"
    model = resnet().to(memory_format=torch.channels_last)   # channels_last: the cut writes new masks, then zeroes the weights apart
    sp = Sparsifier(model, 'weight', 'global')
    with cut_path(True), Foreach() as fe:
        sp.sparsify_model(50); sp.apply_masks(); sp.remove()
    assert fe.calls and all(a == b == {torch.float32} for a, b in fe.calls), fe.calls
    assert all(int((m.weight == 0).sum()) > 0 for m in model.modules() if isinstance(m, nn.Conv2d))

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: counts the real syncs with torch.cuda.set_sync_debug_mode")
def test_a_global_cut_on_cuda_syncs_at_most_10_times():
    "On a GPU, torch itself reports every synchronizing call: the default global cut of ResNet-18 makes at most 10"
    import warnings
    sp = Sparsifier(resnet().cuda(), 'weight', 'global', large_final)
    sp.sparsify_model(10)                     # the first cut: allocations and lazy initialization, not counted
    torch.cuda.synchronize()
    for s in (50, 80):
        torch.cuda.set_sync_debug_mode('warn')
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter('always')
                sp.sparsify_model(s)
        finally: torch.cuda.set_sync_debug_mode(0)
        syncs = [x for x in w if 'synchroniz' in str(x.message).lower()]
        print(f"\n{s}% on CUDA: {len(syncs)} syncing calls")
        assert len(syncs) <= 10
