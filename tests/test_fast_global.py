"""The streaming radix cut (`cut_lowest`) against a plain sort: random shapes, ties, negative and -inf scores,
already-removed entries, both of its routes (candidate list, second histogram), both of its paths (the CPU's, and the
sync-free one a GPU takes, run here on the CPU), and the `Sparsifier` paths built on it."""
import copy, math
import pytest, torch
from torch import nn
import torch.nn.utils.prune as prune
from hypothesis import given, settings, strategies as st, HealthCheck
import lth_nbdev.cut as C
from cut_helpers import cut_path
from lth_nbdev.sparsifier import Sparsifier, mask_name
from lth_nbdev.cut import lowest_k_masks, cut_lowest, score_keys
from lth_nbdev.criteria import large_final, small_final, criteria_by_name


def sort_reference(scores, k, alive=None):
    "Remove the already-removed entries, then the lowest alive ones by a stable sort, until `k` are gone"
    flat = torch.cat([s.reshape(-1) for s in scores]).float()
    dead = torch.zeros(flat.numel(), dtype=torch.bool) if alive is None else ~torch.cat([a.reshape(-1) for a in alive])
    keep = ~dead
    live = (~dead).nonzero().squeeze(1)
    order = live[torch.sort(flat[live], stable=True).indices]    # ties: earlier tensor, then earlier position
    keep[order[:max(k - int(dead.sum()), 0)]] = False
    return [kk.view(s.shape) for kk, s in zip(keep.split([s.numel() for s in scores]), scores)]

def keep_one_reference(scores, k, alive=None):
    "`sort_reference` with each tensor's best alive entry (the last of its highest scores) kept: `k` lowered only if it must be"
    alive = alive or [torch.ones(s.shape, dtype=torch.bool) for s in scores]
    flat = torch.cat([s.reshape(-1) for s in scores]).float()
    dead = ~torch.cat([a.reshape(-1) for a in alive])
    protect, at = torch.zeros(flat.numel(), dtype=torch.bool), 0
    for s, a in zip(scores, alive):
        f, av = s.reshape(-1).float(), a.reshape(-1)
        if av.any():
            idx = av.nonzero().squeeze(1)
            best = f[idx].max()
            protect[at + int(idx[f[idx] == best][-1])] = True
        at += f.numel()
    keep = ~dead
    live = (~dead & ~protect).nonzero().squeeze(1)
    order = live[torch.sort(flat[live], stable=True).indices]
    k = min(k, flat.numel() - int(protect.sum()))
    keep[order[:max(k - int(dead.sum()), 0)]] = False
    return [kk.view(s.shape) for kk, s in zip(keep.split([s.numel() for s in scores]), scores)]

@st.composite
def score_lists(draw):
    "A few tensors of random shapes, drawn from a small pool of values (so ties are common) or from a wide range"
    pool = draw(st.lists(st.sampled_from([0., -0., 1., -1., 2.5, -math.inf, 1e-30, -1e-30, 3e38, -3e38, 0.5, 0.25]),
                         min_size=1, max_size=6))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        shape = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3)))
        n = math.prod(shape)
        kind = draw(st.sampled_from(['pool', 'normal', 'mixed']))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
        normal = torch.randn(n, generator=g) * draw(st.sampled_from([1e-3, 1., 1e3]))
        picked = torch.tensor(pool)[torch.randint(len(pool), (n,), generator=g)]
        t = {'pool': picked, 'normal': normal, 'mixed': torch.where(torch.rand(n, generator=g) < .5, picked, normal)}[kind]
        out.append(t.view(shape))
    return out

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scores=score_lists(), data=st.data())
def test_cut_matches_a_stable_sort(scores, data):
    n = sum(s.numel() for s in scores)
    k = data.draw(st.integers(0, n))
    chunk = data.draw(st.sampled_from([None, 1, 3, 16]))
    mc = data.draw(st.sampled_from([None, 0, 1, 5]))
    with cut_path(data.draw(st.booleans())): got = lowest_k_masks(scores, k, chunk, mc)
    for g, r in zip(got, sort_reference(scores, k)): assert torch.equal(g, r)
    assert sum(int((~g).sum()) for g in got) == k

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scores=score_lists(), data=st.data())
def test_cut_with_removed_entries(scores, data):
    "Entries not `alive` go first and never come back; exactly max(k, removed) go"
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    p = data.draw(st.sampled_from([0., .3, .9, 1.]))
    alive = [torch.rand(s.shape, generator=g) >= p for s in scores]
    n = sum(s.numel() for s in scores)
    k = data.draw(st.integers(0, n))
    chunk = data.draw(st.sampled_from([1, 4, 2**20]))
    mc = data.draw(st.sampled_from([None, 0]))
    def chunks():
        for j, (s, a) in enumerate(zip(scores, alive)):
            f, af = s.reshape(-1), a.reshape(-1)
            for st_ in range(0, f.numel(), chunk): yield j, st_, score_keys(f[st_:st_ + chunk]), af[st_:st_ + chunk]
    keep = [torch.empty(s.shape, dtype=torch.bool) for s in scores]
    with cut_path(data.draw(st.booleans())): cut_lowest(chunks, k, keep, mc)
    for kk, r, a in zip(keep, sort_reference(scores, k, alive), alive):
        assert torch.equal(kk, r)
        assert not (kk & ~a).any()

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scores=score_lists(), data=st.data())
def test_keep_one_cut_matches_reference(scores, data):
    "With `keep_one`, every tensor keeps its best entry; `k` is lowered only when it cannot be met otherwise, and the cap is reported"
    from lth_nbdev.cut import _key_chunks
    n = sum(s.numel() for s in scores)
    k = data.draw(st.integers(0, n))
    keep = [torch.empty(s.shape, dtype=torch.bool) for s in scores]
    capped = []
    with cut_path(data.draw(st.booleans())):
        cut_lowest(_key_chunks(scores, data.draw(st.sampled_from([3, 2**20]))), k, keep, data.draw(st.sampled_from([None, 0])),
                   keep_one=True, on_capped=lambda done, asked: capped.append((done, asked)))
    want = keep_one_reference(scores, k)
    for a, b in zip(keep, want): assert torch.equal(a, b)
    assert all(bool(kk.any()) for kk in keep)
    assert capped == ([(n - len(scores), k)] if k > n - len(scores) else [])

def test_cut_rejects_bad_k():
    with pytest.raises(ValueError, match=r'k must be in \[0, 3\]'): lowest_k_masks([torch.zeros(3)], 4)

def random_model(data):
    layers = []
    for _ in range(data.draw(st.integers(1, 4))):
        a, b = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))
        layers.append(data.draw(st.sampled_from([lambda: nn.Linear(a, b), lambda: nn.Conv2d(a, b, 3)]))())
    return nn.Sequential(*layers)

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**16), crit=st.sampled_from(['large_final', 'small_final', 'movement', 'magnitude_increase']),
       method=st.sampled_from(['global', 'local']), s1=st.floats(0, 99), s2=st.floats(0, 99), chunk=st.sampled_from([7, 2**20]),
       ties=st.booleans(), mc=st.sampled_from([None, 0]), empty=st.booleans(), sync_free=st.booleans())
def test_sparsifier_matches_reference(data, seed, crit, method, s1, s2, chunk, ties, mc, empty, sync_free):
    "Two pruning steps; each step's masks are what the sort-based reference gives from the scores and old masks (both routes of the cut)"
    import warnings; warnings.simplefilter('ignore', UserWarning)   # the keep-one cap is announced; its counts are checked here
    import lth_nbdev.sparsifier as S
    old, S.chunk_size = S.chunk_size, chunk
    old_mc, S.max_candidates = S.max_candidates, mc
    old_path, C.sync_free = C.sync_free, sync_free
    try:
        torch.manual_seed(seed)
        model = random_model(data)
        if ties:
            with torch.no_grad():
                for m in model: m.weight.copy_(torch.randint(-3, 4, m.weight.shape).float())
        sp = Sparsifier(model, 'weight', method, criteria_by_name[crit], layer_type=(nn.Conv2d, nn.Linear), allow_empty_layers=empty)
        ref = sort_reference if empty else keep_one_reference
        with torch.no_grad():
            for m in sp.layers.values(): m.weight.add_(0.01 * torch.randn_like(m.weight).round())
        for s in sorted((s1, s2)):
            names = list(sp.layers)
            c = criteria_by_name[crit]
            scores = [c(sp.layers[n].weight.detach(), sp.init_weights.get(n)).float() for n in names]
            alive = [getattr(sp.layers[n], mask_name).clone() for n in names]
            if method == 'global': want = ref(scores, round(s / 100 * sum(x.numel() for x in scores)), alive)
            else: want = [ref([x], round(s / 100 * x.numel()), [a])[0] for x, a in zip(scores, alive)]
            fresh = sp.new_masks(s)
            sp.sparsify_model(s)
            for n, w in zip(names, want):
                assert torch.equal(fresh[n], w)
                assert torch.equal(getattr(sp.layers[n], mask_name), w)
                assert (sp.layers[n].weight[~w] == 0).all()
    finally: S.chunk_size, S.max_candidates, C.sync_free = old, old_mc, old_path

@pytest.mark.parametrize('seed', range(5))
def test_global_agrees_with_torch_prune(seed):
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3), nn.Linear(32, 100), nn.Linear(100, 10))
    b = copy.deepcopy(a)
    Sparsifier(a, 'weight', 'global', large_final, layer_type=(nn.Conv2d, nn.Linear)).sparsify_model(50)
    params = [(m, 'weight') for m in b]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.5)
    for ma, mb in zip(a, b): assert torch.equal(getattr(ma, mask_name), mb.weight_mask.bool())

@pytest.mark.parametrize('sync_free', [False, True])
def test_non_finite_scores_are_reported(sync_free):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with torch.no_grad(): model[1].weight[0, 0] = math.nan
    before = [m.weight.detach().nan_to_num() for m in model]
    with cut_path(sync_free), pytest.raises(ValueError, match='NaN or infinite score.*for 1'):
        Sparsifier(model, 'weight', 'global').sparsify_model(50)
    assert all(torch.equal(m.weight.detach().nan_to_num(), w) for m, w in zip(model, before))   # raised before any weight was zeroed

def test_random_and_user_criteria_are_exact():
    "Criteria that cannot be recomputed slice by slice (random, a user's function) keep their scores for the cut"
    torch.manual_seed(0)
    for crit in (criteria_by_name['random'], lambda wf, wi: (wf - wf.mean()).abs()):
        model = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 10))
        sp = Sparsifier(model, 'weight', 'global', crit)
        sp.sparsify_model(37)
        assert sum(int((~m).sum()) for m in sp.masks.values()) == round(0.37 * 800)

def test_no_init_copy_for_final_weight_criteria():
    "large_final never reads the initial weights, so none are held; movement does"
    model = nn.Sequential(nn.Linear(8, 8))
    assert Sparsifier(model, 'weight', 'global', large_final).init_weights == {}
    assert set(Sparsifier(model, 'weight', 'global', criteria_by_name['movement']).init_weights) == {'0'}

def test_lowest_k_masks_passes_chunk_and_max_candidates_on(monkeypatch):
    "The result is the same on every route; these check that the route asked for is the one taken"
    sizes, reached = [], []
    real_keys, real_first = C.score_keys, C._first_reaching
    monkeypatch.setattr(C, 'score_keys', lambda s: sizes.append(s.numel()) or real_keys(s))
    monkeypatch.setattr(C, '_first_reaching', lambda h, k: reached.append(k) or real_first(h, k))
    scores = [torch.arange(10.)]
    assert lowest_k_masks(scores, 3, 4, 0)[0].tolist() == [False] * 3 + [True] * 7
    assert sizes[:3] == [4, 4, 2] and len(reached) == 2             # slices of 4; the crowded-bin route (two histograms)
    sizes.clear(); reached.clear()
    assert lowest_k_masks(scores, 3)[0].tolist() == [False] * 3 + [True] * 7
    assert sizes[0] == 10 and len(reached) == 1                      # one slice; the candidate route

def test_score_keys_order_every_float_dtype_and_share_zero():
    "Keys order as the scores do, for any float dtype (converted to float32 first); -0.0 and 0.0 share one key; no scores, no keys"
    tiny = torch.finfo(torch.float32).tiny * 2.**-23                       # the smallest positive subnormal
    x = torch.tensor([-math.inf, -3e38, -1., -tiny, -0., 0., tiny, 1., 3e38, math.inf])
    k = score_keys(x)
    assert k.dtype == torch.int32 and k.shape == (10,)
    assert (torch.diff(k.long()) > 0).tolist() == [True] * 4 + [False] + [True] * 4 and int(k[4]) == int(k[5])
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        y = torch.randn(3, 5, dtype=torch.float64).to(dt)
        assert torch.equal(score_keys(y), score_keys(y.float()))           # 15 keys, not a reinterpretation of the raw bytes
    assert score_keys(torch.empty(0)).numel() == 0 and score_keys(torch.empty(0, 3)).numel() == 0

def test_counts_stay_exact_beyond_two_to_the_24():
    "The histograms count in int64: a float32 count stops at 2**24 (16,777,216) entries, fewer than a ResNet-50's 25M weights"
    n = 2**24 + 1
    assert not bool(lowest_k_masks([torch.zeros(n)], n)[0].any())
