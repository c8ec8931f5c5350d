"""Why multiplying by bool masks is slow: the ways stock PyTorch offers to apply them, against a float multiply.

On ResNet-18's prunable weights at 50% random sparsity, one pass that zeroes the pruned weights, done each way
stock PyTorch offers (best of 30; on the CPU 1 thread, as the callback's per-step call would be on one core):

    python bench/mask_dtype.py                  # the CPU: a bool multiply casts every mask element on the fly
    python bench/mask_dtype.py --device cuda    # a GPU: float x bool leaves `_foreach_mul_`'s fused kernels

On CUDA, `torch._foreach_mul_` runs a few fused kernels over all the tensors only when both lists have one dtype;
float weights times bool masks fall back to one multiply per tensor.
"""
import argparse, time, torch, torchvision

def best_ms(f, n=30, sync=lambda: None):
    f(); sync(); best = float('inf')
    for _ in range(n):
        s = time.perf_counter(); f(); sync(); best = min(best, time.perf_counter() - s)
    return 1e3 * best

def loop(fn, *lists):
    def run():
        for args in zip(*lists): fn(*args)
    return run

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--device', default='cpu')
    dev = p.parse_args().device
    if dev == 'cpu': torch.set_num_threads(1)
    sync = torch.cuda.synchronize if dev.startswith('cuda') else (lambda: None)
    torch.manual_seed(0)
    ws = [p.data.to(dev) for p in torchvision.models.resnet18().parameters() if p.dim() > 1]
    keep = [torch.rand_like(w) > 0.5 for w in ws]
    pruned = [~k for k in keep]
    floats = [k.float() for k in keep]
    bufs = [torch.empty_like(w) for w in ws]
    zero = torch.zeros((), device=dev)
    n = sum(w.numel() for w in ws)
    print(f"ResNet-18, {n / 1e6:.1f}M prunable weights in {len(ws)} tensors, torch {torch.__version__}, on {dev}"
          f"{' (1 thread)' if dev == 'cpu' else ''}; ms per pass over all of them")
    rows = [("_foreach_mul_ by float32 masks (ours per step, since StepMasks)", lambda: torch._foreach_mul_(ws, floats)),
            ("_foreach_mul_ by bool masks (ours per step, before)", lambda: torch._foreach_mul_(ws, keep)),
            ("copy_ bool -> float32, then multiply", loop(lambda w, k, b: w.mul_(b.copy_(k)), ws, keep, bufs)),
            ("masked_fill_(pruned, 0)", loop(lambda w, p: w.masked_fill_(p, 0), ws, pruned)),
            ("torch.where(keep, w, 0, out=w)", loop(lambda w, k: torch.where(k, w, zero, out=w), ws, keep))]
    times = [best_ms(fn, sync=sync) for _, fn in rows]
    for (name, _), ms in zip(rows, times): print(f"{name:66s} {ms:7.2f}  ({ms / times[0]:.2f}x the float multiply)")
