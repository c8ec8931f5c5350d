"""Time each torch op the global cut runs on one slice of 2^20 entries, on 1 thread (issue 16: which ops set the cut / abs ratio).

    taskset -c 0 python bench/slice_ops.py

Prints microseconds per call, one op per line, and one `torch.abs` (allocating its result) as the yardstick. The second
part times, side by side, the forms the cut used before and the ones it uses now (`_compare`, `_true_positions`, the uint8
reads of bool masks), with their ratio.
"""
import torch, time
from lth_nbdev.cut import _compare, _true_positions
torch.set_num_threads(1)
n = 2**20; w = torch.randn(n) * 0.02; buf = torch.empty(n); alive = torch.rand(n) > 0.3
top = torch.empty(n, dtype=torch.int32); o = torch.empty(n, dtype=torch.bool); ins = torch.empty(n, dtype=torch.bool); dest = torch.empty(n, dtype=torch.bool)
def t(name, f, reps=200, show=True):
    f(); s = time.perf_counter()
    for _ in range(reps): f()
    us = 1e6 * (time.perf_counter() - s) / reps
    if show: print(f"{name:44s} {us:8.1f} us")
    return us
c = torch.abs(w, out=buf).view(torch.int32)
t('abs into', lambda: torch.abs(w, out=buf))
t('min (score_keys)', lambda: int(c.min()))
t('shift', lambda: torch.bitwise_right_shift(c, 16, out=top))
t('add_', lambda: top.add_(32768))
top2 = (c >> 16) + 32768
t('bincount', lambda: torch.bincount(top2, minlength=65536))
hi = int(top2.median()) - 32768
tt = c >> 16
t('&= alive', lambda: ins.__iand__(alive))
t('logical_and out', lambda: torch.logical_and(o, alive, out=dest))
t('abs alloc (yardstick)', lambda: torch.abs(w))
ws, f, w2 = {}, torch.empty(n), w.clone()
inside = torch.eq(tt, hi)
print(f"\nbefore -> now (the threshold bin holds {int(inside.sum())} of the slice's {n} keys)")
pairs = [('eq into bool', lambda: torch.eq(tt, hi, out=ins), '_compare(eq): int32, then copied', lambda: _compare(torch.eq, tt, hi, ws, 'inside')),
         ('ge into bool', lambda: torch.ge(tt, hi, out=o), '_compare(ge)', lambda: _compare(torch.ge, tt, hi, ws, 'out')),
         ('nonzero', lambda: inside.nonzero(), '_true_positions', lambda: _true_positions(inside)),
         ('mul_ by bool alive', lambda: top.mul_(alive), 'mul_ by alive read as uint8', lambda: top.mul_(alive.view(torch.uint8))),
         ('bool keep -> float copy', lambda: f.copy_(dest), 'keep read as uint8 -> float', lambda: f.copy_(dest.view(torch.uint8)))]
assert torch.equal(inside.nonzero().squeeze(1), _true_positions(inside))
for a, fa, b, fb in pairs:
    ta, tb = min(t(a, fa, show=False), t(a, fa, show=False)), min(t(b, fb, show=False), t(b, fb, show=False))
    print(f"{a:26s} {ta:8.1f} us -> {b:34s} {tb:8.1f} us  ({tb / ta:.2f}x)")
t('weight mul_ float keep', lambda: w2.mul_(f))
