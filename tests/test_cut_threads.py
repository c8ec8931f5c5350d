"""The global cut's slices on a pool of threads (issue 16): the masks do not depend on how many threads cut them.

Every test compares the pooled cut (2 or 3 threads, each running torch single-threaded) with 1 thread, with the
plain generator form of `key_chunks`, and with a stable sort; crowded thresholds (many tied scores) take the
second-histogram route, and `max_candidates=0` forces it."""
import copy, math, threading
import pytest, torch
from torch import nn
from hypothesis import given, settings, strategies as st, HealthCheck
import lth_nbdev.sparsifier as S, lth_nbdev.cut as C
from lth_nbdev.sparsifier import Sparsifier, mask_name
from lth_nbdev.cut import KeySlices, cut_lowest, score_keys, lowest_k_masks
from lth_nbdev.criteria import criteria_by_name

def sort_reference(scores, k, alive=None):
    "Remove the already-removed entries, then the lowest alive ones by a stable sort, until `k` are gone"
    flat = torch.cat([s.reshape(-1) for s in scores]).float()
    keep = torch.ones(flat.numel(), dtype=torch.bool) if alive is None else torch.cat([a.reshape(-1) for a in alive]).clone()
    live = keep.nonzero().squeeze(1)
    order = live[torch.sort(flat[live], stable=True).indices]    # ties: earlier tensor, then earlier position
    keep[order[:max(k - (flat.numel() - live.numel()), 0)]] = False
    return [kk.view(s.shape) for kk, s in zip(keep.split([s.numel() for s in scores]), scores)]

def slices(scores, alive, size):
    "A `KeySlices` over `scores` (with `alive` masks, or None) in slices of `size`"
    flat = [s.reshape(-1) for s in scores]
    fa = None if alive is None else [a.reshape(-1) for a in alive]
    tasks = [(j, st_, min(st_ + size, f.numel())) for j, f in enumerate(flat) for st_ in range(0, f.numel(), size)]
    return KeySlices(tasks, lambda t, ws: (score_keys(flat[t[0]][t[1]:t[2]]), None if fa is None else fa[t[0]][t[1]:t[2]]))

@st.composite
def crowded_scores(draw):
    "A few tensors: values from a small pool (ties: the crowded route), normal, or mixed"
    pool = draw(st.lists(st.sampled_from([0., -0., 1., -1., 2.5, -math.inf, 1e-30, 3e38, 0.5, 0.25]), min_size=1, max_size=5))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 200))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
        picked = torch.tensor(pool)[torch.randint(len(pool), (n,), generator=g)]
        normal = torch.randn(n, generator=g)
        out.append({'pool': picked, 'normal': normal,
                    'mixed': torch.where(torch.rand(n, generator=g) < .5, picked, normal)}[draw(st.sampled_from(['pool', 'normal', 'mixed']))])
    return out

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scores=crowded_scores(), data=st.data())
def test_pooled_cut_matches_one_thread_and_a_sort(scores, data):
    n = sum(s.numel() for s in scores)
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    alive = data.draw(st.sampled_from([None, 'some']))
    if alive: alive = [torch.rand(s.shape, generator=g) >= data.draw(st.sampled_from([0., .3, .9])) for s in scores]
    k = data.draw(st.integers(0, n))
    size = data.draw(st.sampled_from([1, 3, 16, 2**20]))
    mc = data.draw(st.sampled_from([None, 0, 1, 5]))
    want = sort_reference(scores, k, alive)
    for threads in (1, 2, 3):
        keep = [torch.empty(s.shape, dtype=torch.bool) for s in scores]
        cut_lowest(slices(scores, alive, size), k, keep, mc, threads=threads)
        for kk, w in zip(keep, want): assert torch.equal(kk, w), threads
    keep = [torch.empty(s.shape, dtype=torch.bool) for s in scores]
    cut_lowest(lambda: slices(scores, alive, size)(), k, keep, mc)   # the plain generator form: in order, one thread
    for kk, w in zip(keep, want): assert torch.equal(kk, w)
    keep = [torch.empty(s.shape, dtype=torch.bool) for s in scores]
    old, C.sync_free = C.sync_free, True   # the sync-free path a GPU takes: one thread whatever `threads` says
    try: cut_lowest(slices(scores, alive, size), k, keep, mc, threads=3)
    finally: C.sync_free = old
    for kk, w in zip(keep, want): assert torch.equal(kk, w)

def test_the_pool_runs_the_slices_single_threaded_and_restores_the_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        def on_chunk(j, start, keep): seen.append((threading.current_thread().name, torch.get_num_threads()))
        scores = [torch.randn(1000), torch.randn(500)]
        keep = [torch.empty(s.shape, dtype=torch.bool) for s in scores]
        cut_lowest(slices(scores, None, 100), 700, keep, on_chunk=on_chunk)
        assert len(seen) == 15 and all(name.startswith('lth_cut') and n == 1 for name, n in seen)
        assert torch.get_num_threads() == 2
        for kk, w in zip(keep, sort_reference(scores, 700)): assert torch.equal(kk, w)
        with pytest.raises(ValueError, match='k must be in'): cut_lowest(slices(scores, None, 100), 2000, keep)
        assert torch.get_num_threads() == 2                      # restored after a failed cut too
        seen.clear(); torch.set_num_threads(1)
        cut_lowest(slices(scores, None, 100), 700, keep, on_chunk=on_chunk)
        assert {name for name, _ in seen} == {threading.current_thread().name}   # 1 thread: no pool, slices in order here
    finally: torch.set_num_threads(before)

@pytest.mark.parametrize('ties,mc', [(False, None), (True, None), (True, 0), (False, 0)])
@pytest.mark.parametrize('method', ['global', 'local'])
def test_sparsifier_masks_do_not_depend_on_the_threads(ties, mc, method, monkeypatch):
    "Two pruning steps on a random Linear stack, with 1 and with 2 torch threads: the same masks and weights, and a sort's"
    monkeypatch.setattr(S, 'chunk_size', 97); monkeypatch.setattr(S, 'max_candidates', mc)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.Linear(30, 50), nn.Linear(50, 10))
    if ties:
        with torch.no_grad():
            for m in model: m.weight.copy_(torch.randint(-3, 4, m.weight.shape).float())
    before, results = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sp = Sparsifier(copy.deepcopy(model), 'weight', method, criteria_by_name['large_final'])
            steps = []
            for s in (30, 70):
                names = list(sp.layers)
                scores = [sp.layers[n].weight.detach().abs() for n in names]
                alive = [getattr(sp.layers[n], mask_name).clone() for n in names]
                if method == 'global': want = sort_reference(scores, round(s / 100 * sum(x.numel() for x in scores)), alive)
                else: want = [sort_reference([x], round(s / 100 * x.numel()), [a])[0] for x, a in zip(scores, alive)]
                sp.sparsify_model(s)
                assert torch.get_num_threads() == threads
                for n, w in zip(names, want): assert torch.equal(getattr(sp.layers[n], mask_name), w)
                steps.append({n: (getattr(m, mask_name).clone(), m.weight.detach().clone()) for n, m in sp.layers.items()})
            results.append(steps)
    finally: torch.set_num_threads(before)
    for a, b in zip(*results):
        for n in a: assert torch.equal(a[n][0], b[n][0]) and torch.equal(a[n][1], b[n][1])

def test_lowest_k_masks_with_threads_matches_one_thread():
    "Many ties around the cut (a crowded bin) and the second histogram, with 2 threads and with 1"
    before = torch.get_num_threads()
    g = torch.Generator().manual_seed(1)
    scores = [torch.randint(0, 5, (3000,), generator=g).float() / 4, torch.randn(2000, generator=g).abs()]
    try:
        got = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got[threads] = [lowest_k_masks(scores, k, 64, mc) for k in (0, 1, 1234, 2500, 5000) for mc in (None, 0)]
    finally: torch.set_num_threads(before)
    want = [sort_reference(scores, k) for k in (0, 1, 1234, 2500, 5000) for _ in (None, 0)]
    for a, b, w in zip(got[1], got[2], want):
        for x, y, z in zip(a, b, w): assert torch.equal(x, y) and torch.equal(x, z)
