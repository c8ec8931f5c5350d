"""Every loader of a file a user may be handed, fed truncated, bit-flipped and random files: ticket files,
search checkpoints, the results files the tutorials read, the data cache and data archives.

Each damaged file either fails with a `ValueError` naming it, or loads to exactly what the intact file
holds (a flip in bytes that nothing reads). Nothing crashes with another exception, nothing hangs (each
load runs under an alarm), and a failed load leaves the model (and the search's learner, optimizer and
random state) as it was. The damage comes from a fixed-seed corpus (cuts and one-bit flips at every
byte of the headers and at random places beyond) and from hypothesis (random bytes, random payloads
behind a valid header), derandomized so that every run tests the same files.
"""
import io, json, math, random, signal, shutil, warnings
from contextlib import contextmanager
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
import lth_nbdev.search as search
from lth_nbdev.callback import model_state
from lth_nbdev.data import digits_cnn, digits_dls, imagenette_folder, imagenette_tensors, read_cache, _write_cache
from lth_nbdev.search import find_ticket, checkpoint_signature, checkpoint_format, rng_state
from lth_nbdev.sparsifier import Sparsifier
from lth_nbdev.stats import load_results
from lth_nbdev.tickets import save_ticket, load_ticket, checked_bytes, load_plain, ticket_signature, ticket_format
from test_security import tiny_archive

ROOT = Path(__file__).parent.parent
fuzz = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

@contextmanager
def deadline(seconds=20):
    "Fail, instead of hanging, if the block takes longer than `seconds`"
    def boom(*_): raise TimeoutError(f"a load took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, boom); signal.setitimer(signal.ITIMER_REAL, seconds)
    try: yield
    finally: signal.setitimer(signal.ITIMER_REAL, 0); signal.signal(signal.SIGALRM, old)

def damaged(data:bytes, seed=0, head:int=None, n_random=60):
    "(what, bytes): cuts, one-bit flips at every byte of the first `head` bytes and at random places, an appended byte"
    rng = random.Random(seed)
    head = min(len(data), head if head is not None else 0)
    cuts = sorted({0, 1, 2, len(data) // 2, len(data) - 1} | set(range(0, head + 1, max(1, head // 20))) | set(rng.sample(range(len(data)), 15)))
    for c in cuts: yield f'cut at {c}', data[:c]
    for i in sorted(set(range(head)) | set(rng.sample(range(len(data)), min(n_random, len(data))))):
        b = bytearray(data); b[i] ^= 1 << rng.randrange(8); yield f'bit {i}', bytes(b)
    yield 'appended byte', data + b'\n'
    yield 'random bytes', bytes(rng.randrange(256) for _ in range(min(len(data), 4096)))

def header_end(data:bytes)->int: return data.index(b'\n', data.index(b'\n') + 1) + 1

def _state(model): return {k: v.clone() for k, v in model.state_dict().items()}

def _same(a:dict, b:dict):
    assert list(a) == list(b)
    for k in a: assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k

def _names(e, path): assert str(path) in str(e), f"the message does not name {path}: {e}"

# ---- tickets -------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def ticket(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('tickets')
    torch.manual_seed(0)
    m = digits_cnn(); init = model_state(m)
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn_like(p) * 0.1)
    Sparsifier(m, method='global').sparsify_model(70)
    files = {c: save_ticket(m, tmp/f'good-{c}.ticket', compact=c, rewind_weights=init, meta=dict(note='fuzz')) for c in (False, True)}
    return dict(model=m, files=files, tmp=tmp)

def _target():
    "A pruned model to load tickets into, and its state"
    target = digits_cnn(); Sparsifier(target).sparsify_model(10); return target, _state(target)

def _try_ticket(path, target, before, ref_state):
    "Load `path` into `target`: a ValueError naming it (model untouched), or the reference ticket exactly"
    try:
        with deadline(): load_ticket(path, target)
    except ValueError as e:
        _names(e, path); _same(_state(target), before); return False
    _same(_state(target), ref_state); target.load_state_dict(before); return True

@pytest.mark.parametrize('compact', [False, True])
def test_fuzz_ticket_bytes(ticket, tmp_path, compact):
    data, ref = ticket['files'][compact].read_bytes(), _state(ticket['model'])
    bad, loaded, (target, before) = tmp_path/'bad.ticket', [], _target()
    for what, d in damaged(data, head=header_end(data) + 16):
        bad.write_bytes(d)
        if _try_ticket(bad, target, before, ref): loaded.append(what)
    assert loaded == []                      # the checksums leave no byte unread

def _mutations(d:dict, rng):
    "Payloads one step away from `d`: a key dropped, a value of another type, a tensor of another shape or dtype"
    odd = [None, 0, -1, 1.5, 'x', [], {}, [1, 'a'], {'a': 1}, torch.zeros(3), torch.zeros(2, 2, dtype=torch.bool), True]
    for k in d:
        yield f'drop {k}', {j: v for j, v in d.items() if j != k}
        for o in rng.sample(odd, 4): yield f'{k} = {o!r:.20}', {**d, k: o}
        if isinstance(d[k], dict):
            for j in list(d[k])[:3]:
                yield f'{k}: drop {j}', {**d, k: {i: v for i, v in d[k].items() if i != j}}
                for o in rng.sample(odd, 3): yield f'{k}[{j}] = {o!r:.20}', {**d, k: {**d[k], j: o}}
                v = d[k][j]
                if isinstance(v, torch.Tensor) and v.numel():
                    yield f'{k}[{j}] cut', {**d, k: {**d[k], j: v.flatten()[:-1]}}
                    yield f'{k}[{j}] as float', {**d, k: {**d[k], j: v.float()}}
            yield f'{k}: extra entry', {**d, k: {**d[k], 'extra': torch.ones(2)}}

@pytest.mark.parametrize('compact', [False, True])
def test_fuzz_ticket_payload(ticket, tmp_path, compact):
    "Payloads behind a valid signature, header and checksum, as a file made by hand (or by a bug) would be"
    data = ticket['files'][compact].read_bytes()
    payload = load_plain(data[header_end(data):], 'the good ticket')
    bad, target = tmp_path/'bad.ticket', digits_cnn()
    before = _state(target)
    for what, p in _mutations(payload, random.Random(1)):
        bad.write_bytes(checked_bytes(p, ticket_signature, ticket_format))
        try:
            with deadline(): load_ticket(bad, target, weights='rewind')
        except ValueError as e: _names(e, bad); _same(_state(target), before); continue
        target = digits_cnn(); before = _state(target)              # it loaded (say, other metadata): a fresh model for the next

plain_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=5)
                            | st.builds(torch.zeros, st.integers(0, 3)),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5) | st.integers(0, 3), c, max_size=3), max_leaves=8)

@fuzz
@given(body=st.binary(max_size=3000), prefix=st.sampled_from(['none', 'signature', 'header']))
def test_fuzz_ticket_random(tmp_path, body, prefix):
    bad = tmp_path/'random.ticket'
    if prefix == 'header': bad.write_bytes(checked_bytes(body, ticket_signature)[:-len(body) - 36] + body)  # not a torch.save
    else: bad.write_bytes((ticket_signature if prefix == 'signature' else b'') + body)
    target = digits_cnn(); before = _state(target)
    with pytest.raises(ValueError) as e, deadline(): load_ticket(bad, target)
    _names(e.value, bad); _same(_state(target), before)

@fuzz
@given(payload=plain_values)
def test_fuzz_ticket_random_payload(tmp_path, payload):
    bad = tmp_path/'payload.ticket'
    bad.write_bytes(checked_bytes(dict(kind='lth_nbdev.ticket', masks=payload, shapes=payload, compact=False, meta={}, rewind=payload)))
    target = digits_cnn(); before = _state(target)
    with pytest.raises(ValueError) as e, deadline(): load_ticket(bad, target, weights='rewind')
    _names(e.value, bad); _same(_state(target), before)

# ---- search checkpoints --------------------------------------------------------------------------------

def _learner():
    torch.manual_seed(0)
    learn = Learner(digits_dls(seed=0), digits_cnn(), loss_func=CrossEntropyLossFlat())
    learn.create_opt()
    return learn

@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    "The checkpoint of a finished one-round search (resuming from it trains nothing), its payload and its table"
    path = tmp_path_factory.mktemp('ckpt')/'good.ckpt'
    learn = _learner()
    with learn.no_bar(), learn.no_logging(): s = find_ticket(learn, rounds=1, epochs=1, checkpoint=path, verbose=False)
    data = path.read_bytes()
    return dict(path=path, data=data, payload=load_plain(data[header_end(data):], 'the good checkpoint'),
                table=s.table.drop(columns='seconds'))

@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(search, 'train', lambda *a, **k: pytest.fail('a damaged checkpoint led to training'))

def _everything(learn):
    "The learner's model and optimizer state and every random state a search reads"
    opt = learn.opt.state_dict()
    return dict(model=_state(learn.model), opt=[{k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)} for s in opt['state']],
                hypers=[dict(h) for h in opt['hypers']], python=random.getstate(), numpy=np.random.get_state()[1].copy(),
                torch=torch.get_rng_state(), dl=learn.dls.train.rng.getstate())

def _same_everything(a, b):
    _same(a['model'], b['model'])
    assert len(a['opt']) == len(b['opt']) and all(_same(x, y) is None for x, y in zip(a['opt'], b['opt']))
    assert a['hypers'] == b['hypers'] and a['python'] == b['python'] and a['dl'] == b['dl']
    assert np.array_equal(a['numpy'], b['numpy']) and torch.equal(a['torch'], b['torch'])

@pytest.fixture(scope='module')
def learner():
    "One learner for every damaged checkpoint: each failed resume must leave it exactly as it was"
    learn = _learner(); return learn, _everything(learn)

def _try_checkpoint(path, good_table, learner):
    learn, before = learner
    try:
        with deadline(): s = find_ticket(learn, rounds=1, epochs=1, checkpoint=path, verbose=False)
    except ValueError as e:
        _names(e, path); _same_everything(_everything(learn), before); return False
    pd.testing.assert_frame_equal(s.table.drop(columns='seconds'), good_table)
    pytest.fail(f"{path} loaded although it was damaged")   # and `learner` would no longer be pristine

def test_fuzz_checkpoint_bytes(checkpoint, tmp_path, no_training, learner):
    bad = tmp_path/'bad.ckpt'
    for what, d in damaged(checkpoint['data'], head=header_end(checkpoint['data']) + 16):
        bad.write_bytes(d)
        _try_checkpoint(bad, checkpoint['table'], learner)

def test_fuzz_checkpoint_payload(checkpoint, tmp_path, no_training, learner):
    "Payloads behind a valid header: some fail in `read_checkpoint`, some only while being put into the learner"
    p = checkpoint['payload']
    extra = [('opt state cut', dict(p, opt=dict(p['opt'], state=p['opt']['state'][:-1]))),       # fails inside fastai, after the model loaded
             ('opt hypers cut', dict(p, opt=dict(p['opt'], hypers=[]))),
             ('next round too far', dict(p, next_round=5)),
             ('numpy key out of range', dict(p, rng=dict(p['rng'], numpy=dict(p['rng']['numpy'], key=p['rng']['numpy']['key'] - 2**40)))),
             ('torch state cut', dict(p, rng=dict(p['rng'], torch=p['rng']['torch'][:-8]))),
             ('python state cut', dict(p, rng=dict(p['rng'], python=(3, p['rng']['python'][1][:-1], None)))),
             ('a mask of another shape', dict(p, masks={**p['masks'], 1: dict(p['masks'][1], **{'0': torch.ones(3, dtype=torch.bool)})})),
             ('a model tensor of another shape', dict(p, model=dict(p['model'], **{'0.weight': torch.zeros(2, 2)})))]
    bad, loaded, (learn, before) = tmp_path/'bad.ckpt', [], learner
    for what, d in extra + list(_mutations(p, random.Random(2))):
        bad.write_bytes(checked_bytes(d, checkpoint_signature, checkpoint_format))
        try:
            with deadline(): find_ticket(learn, rounds=1, epochs=1, checkpoint=bad, verbose=False)
        except ValueError as e: _names(e, bad); _same_everything(_everything(learn), before); continue
        loaded.append(what); learn = _learner(); before = _everything(learn)
    print(loaded)
    assert not {w for w, _ in extra} & set(loaded)

def test_fuzz_legacy_checkpoint(checkpoint, tmp_path, no_training, learner):
    """A checkpoint of lth_nbdev 0.1.0 (a plain torch.save, no checksum): cuts, random bytes and flips fail with a
    ValueError or load; a flip inside a tensor's bytes goes unnoticed there, which is why checkpoints now carry a checksum"""
    from test_resume import _legacy
    from lth_nbdev.search import read_checkpoint
    buf = io.BytesIO(); torch.save(_legacy(read_checkpoint(checkpoint['path'])), buf); data = buf.getvalue()
    bad, loaded = tmp_path/'legacy.ckpt', []
    for what, d in damaged(data, seed=3, n_random=40):
        bad.write_bytes(d)
        learn = _learner() if loaded else learner[0]               # a fresh one once a damaged file has loaded into it
        before = _everything(learn)
        try:
            with deadline(): find_ticket(learn, rounds=1, epochs=1, checkpoint=bad, verbose=False)
        except ValueError as e: _names(e, bad); _same_everything(_everything(learn), before); continue
        loaded.append(what)

@fuzz
@given(body=st.binary(max_size=3000), prefix=st.sampled_from([b'', checkpoint_signature, b'PK\x03\x04']))
def test_fuzz_checkpoint_random(tmp_path, body, prefix, learner):
    bad = tmp_path/'random.ckpt'; bad.write_bytes(prefix + body)
    learn = learner[0]; before = _everything(learn)                   # hypothesis reseeds `random` for each example
    with pytest.raises(ValueError) as e, deadline(): find_ticket(learn, rounds=1, epochs=1, checkpoint=bad, verbose=False)
    _names(e.value, bad); _same_everything(_everything(learn), before)

# ---- results files -------------------------------------------------------------------------------------

RESULTS = ['lottery_ticket/lth.json', 'lottery_ticket/lth.csv', 'sparsity_sweep/digits.csv', 'sparsity_sweep/digits_correct.json',
           'instability/digits.json']

def test_every_results_file_loads():
    files = sorted((ROOT/'results').rglob('*.json')) + sorted((ROOT/'results').rglob('*.csv'))
    assert len(files) >= len(RESULTS)
    for f in files: load_results(f)

@pytest.mark.parametrize('name', RESULTS)
def test_fuzz_results(tmp_path, name):
    data = (ROOT/'results'/name).read_bytes()
    bad = tmp_path/Path(name).name
    for what, d in damaged(data, head=200, n_random=80):
        bad.write_bytes(d)
        try:
            with deadline(): r = load_results(bad)
        except ValueError as e: _names(e, bad); continue
        assert isinstance(r, (dict, pd.DataFrame))          # parsed and consistent: a flip in a field nothing repeats

def test_results_cross_checks_catch_changed_counts(tmp_path):
    "Changing any digit of k, n, the accuracy or its interval in a summary is caught"
    text = (ROOT/'results'/'lottery_ticket'/'lth.json').read_text()
    d = json.loads(text); bad = tmp_path/'lth.json'
    for key in ('k', 'n', 'accuracy', 'ci_low', 'ci_high'):
        s = json.dumps(d[key]); at = text.index(f'"{key}": {s}') + len(f'"{key}": ')
        for i, ch in enumerate(s[:7]):                             # every digit of a count, the first five decimals of a rate
            if not ch.isdigit() or (i == 0 and ch == '0'): continue
            bad.write_text(text[:at + i] + str((int(ch) + 1) % 10) + text[at + i + 1:])
            with pytest.raises(ValueError, match=r"lth\.json'"): load_results(bad)

@fuzz
@given(body=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode), suffix=st.sampled_from(['.json', '.csv']))
def test_fuzz_results_random(tmp_path, body, suffix):
    bad = tmp_path/f'random{suffix}'; bad.write_bytes(body)
    try:
        with deadline(): load_results(bad)
    except ValueError as e: _names(e, bad)

# ---- the data cache and data archives ------------------------------------------------------------------

def _cache_dict(n=6, size=8, classes=('a', 'b', 'c')):
    g = torch.Generator().manual_seed(0)
    x = lambda: torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    y = lambda: torch.randint(0, len(classes), (n,), generator=g)
    return dict(x_train=x(), y_train=y(), x_valid=x(), y_valid=y(), classes=list(classes), source='/data/tiny')

def test_fuzz_data_cache(tmp_path):
    good, ref = tmp_path/'good.pt', _cache_dict()
    _write_cache(good, ref)
    data, bad = good.read_bytes(), tmp_path/'bad.pt'
    pixels = data.index(ref['x_train'].numpy().tobytes())          # where x_train's bytes are: damage there must be caught
    flips = [(f'pixel byte {i}', data[:i] + bytes([data[i] ^ 16]) + data[i + 1:]) for i in range(pixels, pixels + ref['x_train'].numel(), 37)]
    for what, d in list(damaged(data, head=120, n_random=150)) + flips:
        bad.write_bytes(d)
        try:
            with deadline(): c = read_cache(bad, 8)
        except ValueError as e: _names(e, bad); continue
        assert not what.startswith('pixel'), what
        for k in ref: assert (torch.equal(c[k], ref[k]) if isinstance(ref[k], torch.Tensor) else c[k] == ref[k]), (what, k)   # intact
    for what, d in _mutations(dict(ref), random.Random(4)):         # other layouts, without a checksum to stop them first
        torch.save(d, bad)
        try:
            with deadline(): read_cache(bad, 8)
        except ValueError as e: _names(e, bad)

@fuzz
@given(body=st.binary(max_size=3000), prefix=st.sampled_from([b'', b'PK\x03\x04']))
def test_fuzz_data_cache_random(tmp_path, body, prefix):
    bad = tmp_path/'random.pt'; bad.write_bytes(prefix + body)
    with pytest.raises(ValueError) as e, deadline(): read_cache(bad, 8)
    _names(e.value, bad)

def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv('LTH_CACHE', str(tmp_path/'cache'))
    folder = imagenette_folder(tiny_archive(tmp_path/'tiny.tgz'), extract_to=tmp_path/'cache')
    first = imagenette_tensors(8, folder)
    cache, = (tmp_path/'cache').glob('tiny-8px-*.pt')
    data = bytearray(cache.read_bytes()); data[len(data) // 2] ^= 4; cache.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"data cache '.*tiny-8px-.*\.pt' is corrupted.*rebuilding it"):
        again = imagenette_tensors(8, folder)
    for a, b in zip(first, again): assert a == b if isinstance(a, list) else torch.equal(a, b)
    assert read_cache(cache, 8)['sha256']                        # rebuilt, with its checksum
    legacy = {k: v for k, v in torch.load(cache, weights_only=True).items() if k != 'sha256'}
    torch.save(legacy, cache)                                    # as lth_nbdev 0.1.0 wrote caches: accepted, and given a checksum
    with warnings.catch_warnings(): warnings.simplefilter('error'); imagenette_tensors(8, folder)
    assert 'sha256' in torch.load(cache, weights_only=True)

def test_fuzz_archive(tmp_path):
    data = tiny_archive(tmp_path/'tiny.tgz').read_bytes()
    work = tmp_path/'work'
    for what, d in damaged(data, head=30, n_random=60):
        shutil.rmtree(work, ignore_errors=True); (work/'cache').mkdir(parents=True)
        bad = work/'tiny.tgz'; bad.write_bytes(d)
        try:
            with deadline(): folder = imagenette_folder(bad, extract_to=work/'cache')
        except ValueError as e:
            _names(e, bad)
            assert list((work/'cache').iterdir()) == [], what          # nothing half-extracted
            continue
        assert folder == work/'cache'/'tiny' and sorted(p.name for p in (folder/'train').iterdir()) == ['a', 'b'], what
        assert sorted(p.name for p in work.iterdir()) == ['cache', 'tiny.tgz']
