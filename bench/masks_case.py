"""Per-step cost of keeping masks applied, and the bytes a search holds per parameter, on ResNet-18/50 (CPU).

Run by `bench/run_all.py`; by hand: `python bench/masks_case.py --case resnet50`. Prints JSON lines.

The three libraries' calls are timed interleaved (one call of each in turn, in an order that rotates, `--reps` rounds, after 5 warm-up
rounds), so that drift in the machine's speed hits them alike.

Mask application per step, each library's own way, at 50% global sparsity:
- ours: `Sparsifier.apply_masks()`, one `torch._foreach_mul_` over every pruned weight by float copies of the
  bool masks, made at the first call after a pruning step (what `SparsifyCallback` runs after each step);
- fasterai 0.4.1: `Sparsifier._apply_masks()`, a Python loop of `weight.mul_(mask)` with float masks (its callback's after_step);
- torch.nn.utils.prune: the forward pre-hooks that recompute `weight = weight_orig * weight_mask` before every forward.
"""
import argparse, json, time, warnings
import torch
from torch import nn

warnings.filterwarnings('ignore')

def resnet(name):
    import torchvision
    torch.manual_seed(0)
    return getattr(torchvision.models, name)()

def interleaved(fns:dict, reps=50, warmup=5):
    "The seconds of each call of each callable, timed in turn round after round (warm-up rounds left out)"
    ts, names = {k: [] for k in fns}, list(fns)
    for i in range(warmup + reps):
        for k in names[i % len(names):] + names[:i % len(names)]:   # the order rotates: no library always goes first
            t = time.perf_counter(); fns[k](); t = time.perf_counter() - t
            if i >= warmup: ts[k].append(t)
    return ts

def summary(ts:dict)->dict:
    "Best and median of each library's times, and how ours compares with each peer round by round"
    from scipy.stats import binomtest
    res = {k: dict(best_ms=1e3 * min(v), median_ms=1e3 * sorted(v)[len(v) // 2]) for k, v in ts.items()}
    for peer in ts:
        if peer == 'ours': continue
        ratios = sorted(o / p for o, p in zip(ts['ours'], ts[peer]))
        faster = sum(r < 1 for r in ratios)
        res['ours'][f'vs_{peer}'] = dict(median_ratio=ratios[len(ratios) // 2], ours_faster=faster, rounds=len(ratios),
                                         sign_test_p=binomtest(faster, len(ratios)).pvalue)
    return res

def nbytes(ts): return sum(t.numel() * t.element_size() for t in ts)

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--case', choices=['resnet18', 'resnet50'], required=True)
    p.add_argument('--reps', type=int, default=50)
    a = p.parse_args()
    types = (nn.Conv2d, nn.Linear)
    out = []

    # ours
    from lth_nbdev.sparsifier import Sparsifier
    from lth_nbdev.criteria import large_final
    from lth_nbdev.callback import model_state, optimizer_state
    m = resnet(a.case)
    sp = Sparsifier(m, 'weight', 'global', large_final, layer_type=types)
    sp.sparsify_model(50)
    n_pruned = sum(l.weight.numel() for l in sp.layers.values())
    n_all = sum(p.numel() for p in m.parameters())
    fns = {'ours': sp.apply_masks}
    sp.apply_masks()   # the first call after a pruning step makes the float copies
    # bytes held by a lottery-ticket search with our callback: masks, rewind point (weights + buffers), optimizer snapshot.
    # The sparsifier's init weights are the rewind point itself (shared), and large_final holds none.
    from fastai.optimizer import Adam, SGD
    held = dict(masks=nbytes(sp.masks.values()), step_copies=nbytes(sp.step_masks.factors), rewind_weights=nbytes(model_state(m).values()),
                init_copy=nbytes(t for t in sp.init_weights.values()))
    for name, opt_fn in (('adam', Adam), ('sgd_momentum', lambda ps, lr: SGD(ps, lr, mom=0.9))):
        opt = opt_fn(list(m.parameters()), lr=1e-3)
        for p_ in m.parameters(): p_.grad = torch.zeros_like(p_)
        opt.step()
        snap = optimizer_state(opt)
        states = snap['state'].values() if isinstance(snap['state'], dict) else snap['state']
        held[f'opt_snapshot_{name}'] = nbytes(t for st in states for t in st.values() if isinstance(t, torch.Tensor))
        for p_ in m.parameters(): p_.grad = None
    out.append(dict(part='held', lib='ours', case=a.case, n_params=n_all, n_pruned=n_pruned,
                    **{k: v / n_all for k, v in held.items()}, masks_per_pruned=held['masks'] / n_pruned))

    # fasterai
    try:
        from fasterai.sparse.sparsifier import Sparsifier as FS
        from fasterai.core.criteria import large_final as fl
        m = resnet(a.case)
        fs = FS(m, 'weight', 'global', fl, layer_type=types)
        fs.sparsify_model(0.5)
        fns['fasterai'] = fs._apply_masks
        masks = [l._mask for l in m.modules() if getattr(l, '_mask', None) is not None]
        inits = [b for l in m.modules() for k, b in l.named_buffers(recurse=False) if k in ('_init_weights', '_init_biases')]
        out.append(dict(part='held', lib='fasterai', case=a.case, n_params=n_all, n_pruned=n_pruned,
                        masks=nbytes(masks) / n_all, init_copy=nbytes(inits) / n_all, masks_per_pruned=nbytes(masks) / n_pruned))
    except ImportError as e:
        out.append(dict(part='apply', lib='fasterai', case=a.case, skipped=f'not installed ({e})'))

    # torch.nn.utils.prune
    import torch.nn.utils.prune as prune
    mt = resnet(a.case)
    mods = [l for l in m.modules() if isinstance(l, types)]
    prune.global_unstructured([(l, 'weight') for l in mods], pruning_method=prune.L1Unstructured, amount=0.5)
    hooks = [(l, h) for l in mods for h in l._forward_pre_hooks.values()]
    def run_hooks():
        for l, h in hooks: h(l, None)
    fns['torch'] = run_hooks
    with torch.no_grad(): timed = summary(interleaved(fns, a.reps))
    for lib, r in timed.items(): out.append(dict(part='apply', lib=lib, case=a.case, **r))
    out.append(dict(part='held', lib='torch', case=a.case, n_params=n_all, n_pruned=n_pruned,
                    masks=nbytes(l.weight_mask for l in mods) / n_all, init_copy=nbytes(l.weight for l in mods) / n_all,
                    masks_per_pruned=nbytes(l.weight_mask for l in mods) / n_pruned))
    for o in out: print(json.dumps(o))

if __name__ == '__main__': main()
