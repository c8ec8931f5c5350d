"""Why multiplying by bool masks is slow on the CPU: the ways stock PyTorch offers to apply them, against a float multiply.

On ResNet-18's prunable weights at 50% random sparsity, one pass that zeroes the pruned weights, done each way
stock PyTorch offers (best of 30, 1 thread, as the callback's per-step call would be on one core):

    python bench/mask_dtype.py
"""
import time, torch, torchvision

def best_ms(f, n=30):
    f(); best = float('inf')
    for _ in range(n):
        s = time.perf_counter(); f(); best = min(best, time.perf_counter() - s)
    return 1e3 * best

def loop(fn, *lists):
    def run():
        for args in zip(*lists): fn(*args)
    return run

if __name__ == '__main__':
    torch.set_num_threads(1); torch.manual_seed(0)
    ws = [p.data for p in torchvision.models.resnet18().parameters() if p.dim() > 1]
    keep = [torch.rand_like(w) > 0.5 for w in ws]
    pruned = [~k for k in keep]
    floats = [k.float() for k in keep]
    bufs = [torch.empty_like(w) for w in ws]
    zero = torch.zeros(())
    n = sum(w.numel() for w in ws)
    print(f"ResNet-18, {n / 1e6:.1f}M prunable weights, torch {torch.__version__}, 1 thread; ms per pass over all of them")
    f = best_ms(lambda: torch._foreach_mul_(ws, floats))
    rows = [("_foreach_mul_ by float32 masks (ours per step, since StepMasks)", f),
            ("_foreach_mul_ by bool masks (ours per step, before)", best_ms(lambda: torch._foreach_mul_(ws, keep))),
            ("copy_ bool -> float32, then multiply", best_ms(loop(lambda w, k, b: w.mul_(b.copy_(k)), ws, keep, bufs))),
            ("masked_fill_(pruned, 0)", best_ms(loop(lambda w, p: w.masked_fill_(p, 0), ws, pruned))),
            ("torch.where(keep, w, 0, out=w)", best_ms(loop(lambda w, k: torch.where(k, w, zero, out=w), ws, keep)))]
    for name, ms in rows: print(f"{name:66s} {ms:7.2f}  ({ms / f:.2f}x the float multiply)")
