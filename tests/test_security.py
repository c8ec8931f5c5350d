"""Files a user loads never run code: a search checkpoint, a ticket file and a data archive crafted to do
harm are refused with a `ValueError` naming the file, and nothing in them runs or gets written.

The hostile pickles hold a `Marker`, whose `__reduce__` makes unpickling call `open(marker, 'w')`: the
marker file appears if, and only if, code from the file ran. Each test first shows that the payload
really does that when unpickled the unsafe way (into a decoy path), then that lth_nbdev's loaders refuse
the same payload and the marker never appears.
"""
import io, os, re, pickle, tarfile
from pathlib import Path
import numpy as np
import pytest
import torch
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from PIL import Image
from lth_nbdev.data import digits_cnn, digits_dls, imagenette_folder
import lth_nbdev.data as data
from lth_nbdev.sparsifier import Sparsifier
from lth_nbdev.search import find_ticket, checkpoint_signature, checkpoint_format
from lth_nbdev.tickets import checked_bytes, load_ticket, ticket_signature, ticket_format

class Marker:
    "Unpickling this calls open(path, 'w'), which creates the file `path`"
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (open, (self.path, 'w'))

def _torch_save(obj)->bytes: b = io.BytesIO(); torch.save(obj, b); return b.getvalue()

def hostile(form:str, marker:Path, signature:bytes, fmt:int)->bytes:
    "A file of `form` that creates `marker` when unpickled the unsafe way"
    payload = dict(kind='lth_nbdev.search', next_round=0, sparsities=[20.], model={}, rng={}, masks={}, evil=Marker(marker))
    if form == 'pickle': return pickle.dumps(payload)                                   # a bare pickle
    if form == 'torch.save': return _torch_save(payload)                                # torch's zip, as lth_nbdev 0.1.0 wrote checkpoints
    if form == 'numpy object array':                                                    # hidden inside what the 0.1.0 allowlist admits
        return _torch_save(dict(payload, evil=np.array([Marker(marker)], dtype=object)))
    if form == 'checked container': return checked_bytes(payload, signature, fmt)       # right signature, header and checksum
    raise ValueError(form)

def unsafe_load(form:str, data:bytes):
    "What a careless loader would do: the payload's code runs"
    if form == 'pickle': return pickle.loads(data)
    if form == 'checked container': data = data[data.index(b'\n', data.index(b'\n') + 1) + 1:]
    return torch.load(io.BytesIO(data), weights_only=False)

FORMS = ['pickle', 'torch.save', 'numpy object array', 'checked container']

def _learner():
    torch.manual_seed(0)
    return Learner(digits_dls(seed=0), digits_cnn(), loss_func=CrossEntropyLossFlat())

def _state(model): return {k: v.clone() for k, v in model.state_dict().items()}

def _same(a:dict, b:dict):
    assert list(a) == list(b)
    for k in a: assert torch.equal(a[k], b[k]), k

@pytest.mark.parametrize('form', FORMS)
def test_hostile_checkpoint_is_refused(tmp_path, form):
    decoy = tmp_path/'decoy'
    unsafe_load(form, hostile(form, decoy, checkpoint_signature, checkpoint_format))
    assert decoy.exists()                                            # the payload is live
    marker, ckpt = tmp_path/'marker', tmp_path/'search.ckpt'
    ckpt.write_bytes(hostile(form, marker, checkpoint_signature, checkpoint_format))
    learn = _learner(); before = _state(learn.model); rng = torch.get_rng_state()
    expected = ('it is not a find_ticket checkpoint' if form == 'pickle' else
                'holds more than tensors and plain values .*it was not loaded, because loading it could run code from the file')
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {str(ckpt)!r}") + '.*' + expected):
        find_ticket(learn, rounds=1, epochs=1, checkpoint=ckpt)
    assert not marker.exists()
    _same(_state(learn.model), before)                               # no mask buffers left behind either
    assert torch.equal(torch.get_rng_state(), rng)

@pytest.mark.parametrize('form', FORMS)
def test_hostile_ticket_is_refused(tmp_path, form):
    decoy = tmp_path/'decoy'
    unsafe_load(form, hostile(form, decoy, ticket_signature, ticket_format))
    assert decoy.exists()
    marker, path = tmp_path/'marker', tmp_path/'evil.ticket'
    path.write_bytes(hostile(form, marker, ticket_signature, ticket_format))
    model = digits_cnn(); Sparsifier(model).sparsify_model(30); before = _state(model)
    expected = {'pickle': 'is not a lth_nbdev ticket file', 'torch.save': 'is not a lth_nbdev ticket file.*plain torch.save file',
                'numpy object array': 'is not a lth_nbdev ticket file',
                'checked container': 'has a valid checksum but its payload holds more than tensors and plain values'}[form]
    with pytest.raises(ValueError, match=re.escape(f"ticket file {str(path)!r}") + ' ' + expected):
        load_ticket(path, model)
    assert not marker.exists()
    _same(_state(model), before)

# ---- archives -----------------------------------------------------------------------------------------

def _member(name, **kw):
    ti = tarfile.TarInfo(name); ti.size = 0
    for k, v in kw.items(): setattr(ti, k, v)
    return ti

def _file(name): ti = _member(name); ti.size = 4; return ti

HOSTILE_MEMBERS = {   # case: (the extra members, the one the message must name)
    'dotdot':          ([_file('tiny/../../../../outside.txt')], 'tiny/../../../../outside.txt'),
    'dotdot inside':   ([_file('tiny/train/../x.txt')], 'tiny/train/../x.txt'),
    'absolute':        ([_file('/tmp/lth_nbdev_outside.txt')], '/tmp/lth_nbdev_outside.txt'),
    'symlink out':     ([_member('tiny/train/a/link', type=tarfile.SYMTYPE, linkname='../../../../../outside')], 'tiny/train/a/link'),
    'symlink absolute':([_member('tiny/link', type=tarfile.SYMTYPE, linkname='/etc')], 'tiny/link'),
    'through symlink': ([_member('tiny/up', type=tarfile.SYMTYPE, linkname='..'), _file('tiny/up/evil.txt')], 'tiny/up/evil.txt'),
    'hardlink out':    ([_member('tiny/h', type=tarfile.LNKTYPE, linkname='../outside_file')], 'tiny/h'),
    'device':          ([_member('tiny/dev', type=tarfile.CHRTYPE, devmajor=1, devminor=3)], 'tiny/dev'),
    'fifo':            ([_member('tiny/fifo', type=tarfile.FIFOTYPE)], 'tiny/fifo'),
}

def tiny_archive(path:Path, extra=())->Path:
    "A valid .tgz (tiny/train and tiny/val, two classes of one image each), then the `extra` members"
    with tarfile.open(path, 'w:gz') as t:
        for split in ('train', 'val'):
            for c in ('a', 'b'):
                b = io.BytesIO(); Image.new('RGB', (12, 10), (200, 30, 30) if c == 'a' else (30, 30, 200)).save(b, 'PNG')
                ti = tarfile.TarInfo(f'tiny/{split}/{c}/0.png'); ti.size = len(b.getvalue()); t.addfile(ti, io.BytesIO(b.getvalue()))
        for ti in extra: t.addfile(ti, io.BytesIO(b'evil') if ti.isfile() else None)
    return path

def _tree(root:Path)->set: return {str(p.relative_to(root)) for p in root.rglob('*')}

@pytest.fixture
def sandbox(tmp_path):
    "tmp_path/archives holds the archives, tmp_path/cache is the cache; everything else must stay as it was"
    (tmp_path/'archives').mkdir(); (tmp_path/'cache').mkdir()
    return tmp_path

def _nothing_written(sandbox, before):
    assert _tree(sandbox) - {'archives/' + p.name for p in (sandbox/'archives').iterdir()} == before
    assert list((sandbox/'cache').iterdir()) == []                  # not even a half-extracted folder
    assert not Path('/tmp/lth_nbdev_outside.txt').exists()

def test_valid_archive_extracts(sandbox):
    folder = imagenette_folder(tiny_archive(sandbox/'archives'/'tiny.tgz'), extract_to=sandbox/'cache')
    assert folder == sandbox/'cache'/'tiny' and _tree(folder/'val') == {'a', 'b', 'a/0.png', 'b/0.png'}
    assert [p.name for p in (sandbox/'cache').iterdir()] == ['tiny']  # the temporary folder is gone

@pytest.mark.parametrize('case', HOSTILE_MEMBERS)
def test_hostile_archive_is_refused(sandbox, case):
    extra, named = HOSTILE_MEMBERS[case]
    archive = tiny_archive(sandbox/'archives'/'tiny.tgz', extra)
    before = _tree(sandbox) - {'archives/tiny.tgz'}
    with pytest.raises(ValueError, match=re.escape(f"data archive {str(archive)!r} holds {named!r}")):
        imagenette_folder(archive, extract_to=sandbox/'cache')
    _nothing_written(sandbox, before)

@pytest.mark.parametrize('case', ['dotdot', 'symlink out', 'hardlink out', 'device'])
def test_data_filter_is_a_second_line(sandbox, case, monkeypatch):
    "With lth_nbdev's own check switched off, Python's filter='data' still refuses these, with a ValueError naming the archive"
    monkeypatch.setattr(data, 'check_archive_members', lambda members, where: None)
    archive = tiny_archive(sandbox/'archives'/'tiny.tgz', HOSTILE_MEMBERS[case][0])
    before = _tree(sandbox) - {'archives/tiny.tgz'}
    with pytest.raises(ValueError, match=re.escape(f"data archive {str(archive)!r} cannot be extracted safely")):
        imagenette_folder(archive, extract_to=sandbox/'cache')
    _nothing_written(sandbox, before)

def test_what_the_data_filter_catches(tmp_path):
    """Python's `filter='data'` on its own: it refuses `..` that leaves the folder, links that leave it, and special
    files; it extracts an absolute name *inside* the folder (stripping the '/'), and follows an inner link to write
    beside it. lth_nbdev refuses those too (see above), so an archive never extracts differently from how it reads."""
    refused, extracted = set(), set()
    for case, (extra, _) in HOSTILE_MEMBERS.items():
        dest = tmp_path/case.replace(' ', '_')/'dest'; dest.mkdir(parents=True)
        archive = tiny_archive(dest.parent/'a.tgz', extra)
        try:
            with tarfile.open(archive) as t: t.extractall(dest, filter='data')
            extracted.add(case)
        except tarfile.FilterError: refused.add(case)
        assert _tree(dest.parent) - {'a.tgz'} == {'dest'} | {f'dest/{p}' for p in _tree(dest)}   # nothing beside dest
    assert refused == {'dotdot', 'symlink out', 'symlink absolute', 'hardlink out', 'device', 'fifo'}
    assert extracted == {'dotdot inside', 'absolute', 'through symlink'}
    assert (tmp_path/'absolute'/'dest'/'tmp'/'lth_nbdev_outside.txt').exists()      # '/tmp/...' became dest/tmp/...

def test_cli_refuses_hostile_archive(sandbox, monkeypatch, capsys):
    from lth_nbdev.cli import main
    archive = tiny_archive(sandbox/'archives'/'tiny.tgz', HOSTILE_MEMBERS['dotdot'][0])
    before = _tree(sandbox) - {'archives/tiny.tgz'}
    monkeypatch.setenv('LTH_CACHE', str(sandbox/'cache'))
    with pytest.raises(SystemExit) as e: main(['--data', str(archive), '--rounds', '1', '--epochs', '1'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"lth-ticket: error: data archive {str(archive)!r} holds 'tiny/../../../../outside.txt'" in err
    _nothing_written(sandbox, before)
