"""Time each torch op the global cut runs on one slice of 2^20 entries, on 1 thread (issue 16: which ops set the cut / abs ratio).

    taskset -c 0 python bench/slice_ops.py

Prints microseconds per call, one op per line, and one `torch.abs` (allocating its result) as the yardstick.
"""
import torch, time
torch.set_num_threads(1)
n = 2**20; w = torch.randn(n) * 0.02; buf = torch.empty(n); alive = torch.rand(n) > 0.3
top = torch.empty(n, dtype=torch.int32); o = torch.empty(n, dtype=torch.bool); ins = torch.empty(n, dtype=torch.bool); dest = torch.empty(n, dtype=torch.bool)
def t(name, f, reps=200):
    f(); s = time.perf_counter()
    for _ in range(reps): f()
    print(f"{name:28s} {1e6 * (time.perf_counter() - s) / reps:8.1f} us")
c = torch.abs(w, out=buf).view(torch.int32)
t('abs into', lambda: torch.abs(w, out=buf))
t('min (score_keys)', lambda: int(c.min()))
t('shift', lambda: torch.bitwise_right_shift(c, 16, out=top))
t('add_', lambda: top.add_(32768))
t('mul_ alive', lambda: top.mul_(alive))
top2 = (c >> 16) + 32768
t('bincount', lambda: torch.bincount(top2, minlength=65536))
hi = int(top2.median()) - 32768
tt = c >> 16
t('eq', lambda: torch.eq(tt, hi, out=ins))
t('&= alive', lambda: ins.__iand__(alive))
t('nonzero', lambda: ins.nonzero())
t('ge', lambda: torch.ge(tt, hi, out=o))
t('logical_and out', lambda: torch.logical_and(o, alive, out=dest))
w2 = w.clone()
t('weight mul_ keep', lambda: w2.mul_(dest))
t('abs alloc (yardstick)', lambda: torch.abs(w))
