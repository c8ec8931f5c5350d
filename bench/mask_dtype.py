"""Why keeping bool masks applied is slower than fasterai on the CPU: one in-place multiply of ResNet-18's
prunable weights by their masks, held as bool (ours) or float32 (fasterai, torch prune), best of 30, 1 thread.

    python bench/mask_dtype.py
"""
import time, torch, torchvision

def best_ms(f, n=30):
    f(); best = float('inf')
    for _ in range(n):
        s = time.perf_counter(); f(); best = min(best, time.perf_counter() - s)
    return 1e3 * best

if __name__ == '__main__':
    torch.set_num_threads(1); torch.manual_seed(0)
    ws = [p.data for p in torchvision.models.resnet18().parameters() if p.dim() > 1]
    bool_masks = [torch.rand_like(w) > 0.5 for w in ws]
    float_masks = [m.float() for m in bool_masks]
    print(f"ResNet-18, {sum(w.numel() for w in ws) / 1e6:.1f}M prunable weights, torch {torch.__version__}, 1 thread")
    b = best_ms(lambda: torch._foreach_mul_(ws, bool_masks)); f = best_ms(lambda: torch._foreach_mul_(ws, float_masks))
    print(f"_foreach_mul_ with bool masks:    {b:.2f} ms")
    print(f"_foreach_mul_ with float32 masks: {f:.2f} ms  (bool / float = {b / f:.2f}x)")
