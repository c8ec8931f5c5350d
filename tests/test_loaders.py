"""The built-in loaders (`digits_dls`, `imagenette_dls`, `tensor_dls`), issue 15 item 2.

1. **The same batches as before.** A multi-seed experiment runs on `imagenette_dls` across sessions; its later arms must
   see exactly the data its earlier arms saw. The batches of today's loaders (the same items in the same order, the same
   flips, the same normalisation, the same dtypes, epoch after epoch, training and validation) are checked two ways:
   against SHA-256 digests computed with the loaders as they were before they became fastai `Datasets` (commit c590bf2,
   `lth_nbdev/data.py` then), and against a frozen copy of that code (`tests/loader_old.py`), batch by batch, with the
   random generators (Python's, torch's) left in the same state after building and after every epoch, and a whole
   `fit` that ends with bit-identical weights.
2. **fastai's paths work on them:** `show_batch`, `learn.export` -> `load_learner` -> `predict`,
   `ClassificationInterpretation` (`plot_confusion_matrix`, `plot_top_losses`), on the digits and on a tiny image folder
   and `.tgz` archive made here.
"""
import contextlib, hashlib, io, random, tarfile
from pathlib import Path
import numpy as np
import pytest
import torch
import fastai.callback.progress   # `learn.no_bar`

# The frozen copy of the batch-producing code of `lth_nbdev.data` before the loaders became fastai `Datasets` (commit
# c590bf2) lives in tests/loader_old.py, which bench/loader_epoch.py times too: the reference the new loaders must match
# bit for bit. Loaded by path: tests/ is not a package.
import importlib.util
_spec = importlib.util.spec_from_file_location('loader_old', Path(__file__).parent/'loader_old.py')
loader_old = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(loader_old)

def make_folder(root:Path, size:int=16, classes=('cat', 'dog', 'fish'), n_train:int=10, n_valid:int=4, seed:int=0)->Path:
    "An image folder `root/train/<class>/*.png`, `root/val/<class>/*.png` of random `size`x`size` RGB images (PNG: lossless)"
    rs = np.random.RandomState(seed)
    from PIL import Image
    for split, n in (('train', n_train), ('val', n_valid)):
        for c in classes:
            (root/split/c).mkdir(parents=True)
            for i in range(n): Image.fromarray(rs.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(root/split/c/f'{i}.png')
    return root

def make_archive(folder:Path, arc:Path)->Path:
    "`folder` as a .tgz holding `<folder name>/train` and `<folder name>/val`, as `imagenette_folder` reads"
    with tarfile.open(arc, 'w:gz') as t: t.add(folder, arcname=folder.name)
    return arc

def batch_digest(b)->bytes:
    "dtype, shape and bytes of every tensor of a batch"
    h = hashlib.sha256()
    for t in b:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode()); h.update(t.view(torch.uint8).reshape(-1).numpy().tobytes() if t.numel() else b'')
    return h.digest()

def epochs_digest(dls, epochs:int=3, torch_seed:int=0)->str:
    "SHA-256 over every training and validation batch of `epochs` epochs (train, valid, train, valid...), torch seeded first"
    torch.manual_seed(torch_seed)
    h = hashlib.sha256()
    for e in range(epochs):
        for dl in (dls.train, dls.valid):
            for b in dl: h.update(batch_digest(b))
    return h.hexdigest()

def scenarios(tmp:Path, impl:dict)->dict:
    "`name: (DataLoaders maker, epochs)` over the digits, a float tensor set with flips, an image folder and a .tgz; `impl` gives the loaders"
    from lth_nbdev.data import digits_tensors
    folder = make_folder(tmp/'tiny')
    arc = make_archive(make_folder(tmp/'src'/'tinier', size=12, classes=('a', 'b'), n_train=9, n_valid=5, seed=1), tmp/'tinier.tgz')
    def float_flips():
        xt, yt, xv, yv = digits_tensors(seed=2)
        random.seed(5)                                  # seed=None: the order comes from Python's generator
        return impl['tensor_dls'](xt[:200], yt[:200], xv[:70], yv[:70], bs=32, mean=(xt.mean(),), std=(xt.std(),), flip=True, seed=None, device='cpu')
    return {
        'digits': lambda: impl['digits_dls'](bs=64, seed=0, device='cpu'),
        'digits_bs50_seed7_max300': lambda: impl['digits_dls'](bs=50, seed=7, device='cpu', max_images=300),
        'float_flips_seed_none': float_flips,
        'folder_16px': lambda: impl['imagenette_dls'](16, bs=8, path=folder, seed=0, device='cpu'),
        'folder_16px_noflip': lambda: impl['imagenette_dls'](16, bs=7, path=folder, flip=False, seed=1, device='cpu'),
        'tgz_12px_max8': lambda: impl['imagenette_dls'](12, bs=3, path=arc, seed=3, device='cpu', max_images=8),
    }

def old_impl(): return dict(tensor_dls=loader_old.tensor_dls, digits_dls=loader_old.digits_dls, imagenette_dls=loader_old.imagenette_dls)
def new_impl():
    from lth_nbdev import data
    return dict(tensor_dls=data.tensor_dls, digits_dls=data.digits_dls, imagenette_dls=data.imagenette_dls)

# Digests of `epochs_digest(maker(), 3)` for each scenario, computed with the loaders of commit c590bf2 (before they became
# fastai `Datasets`): `lth_nbdev.data` as it was then and the frozen copy above both gave these. Never recompute them.
REFERENCE_DIGESTS = {
    'digits': '2a139a5a702b34580a7b7ae72dc3eeb9d983b0c0597cc7d8647b3dcd743f0688',
    'digits_bs50_seed7_max300': '5287ac1c4bfa2cc2a4741498ce985127a39ff9911d81dc8fb4db1caf2b35274b',
    'float_flips_seed_none': 'a9787dd1ec29a644d4373ca74262a9eefdbce94d91307f8185ff48b0a082fc9b',
    'folder_16px': '36cbe38fdbdfe45a8133729b96b925f016e28e2fea900df7e0067d0c7f3aae73',
    'folder_16px_noflip': 'e8140da939b72addbe0225361e5201a4cade8d350b7d3a9df4a568bac1156bde',
    'tgz_12px_max8': '1eeee92919b62c75367b47793585e77c5157343cd35384b1ac39944000f732a6',
}

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "A private tensor cache: the tests never read or write ~/.cache/lth_nbdev"
    monkeypatch.setenv('LTH_CACHE', str(tmp_path/'cache')); monkeypatch.delenv('LTH_DATA', raising=False)
    return tmp_path/'cache'

@pytest.mark.parametrize('name', list(REFERENCE_DIGESTS))
def test_batches_match_the_digests_of_the_old_loaders(name, tmp_path, cache):
    for impl in (old_impl(), new_impl()):               # the frozen copy still gives them, and so do the new loaders
        d = tmp_path/impl['tensor_dls'].__module__.replace('.', '_'); d.mkdir()
        assert epochs_digest(scenarios(d, impl)[name](), 3) == REFERENCE_DIGESTS[name], (name, impl['tensor_dls'].__module__)

def rng_states(): return random.getstate(), torch.get_rng_state().clone(), np.random.get_state()[1].copy()

def same_states(a, b): return a[0] == b[0] and torch.equal(a[1], b[1]) and (a[2] == b[2]).all()

def trace(make, epochs:int=3, seed:int=11)->list:
    "Every batch (tensors, dtypes) of `epochs` epochs, and the random generators' states after building and after each pass"
    random.seed(seed); torch.manual_seed(seed); np.random.seed(seed)
    dls = make(); out = [('built', rng_states())]
    for e in range(epochs):
        for dl in (dls.train, dls.valid):
            out += [tuple(t.clone() for t in b) for b in dl] + [('pass', rng_states())]
    return out

@pytest.mark.parametrize('name', list(REFERENCE_DIGESTS))
def test_same_batches_and_generator_states_as_the_frozen_copy(name, tmp_path, cache):
    (tmp_path/'old').mkdir(); (tmp_path/'new').mkdir()
    old, new = trace(scenarios(tmp_path/'old', old_impl())[name]), trace(scenarios(tmp_path/'new', new_impl())[name])
    assert len(old) == len(new)
    for i, (a, b) in enumerate(zip(old, new)):
        if isinstance(a[0], str): assert a[0] == b[0] and same_states(a[1], b[1]), (name, i, a[0])
        else:
            for s, t in zip(a, b):
                assert type(s) is type(t) and s.dtype == t.dtype and s.shape == t.shape and s.device == t.device and torch.equal(s, t), (name, i)

def small_cnn(c:int, channels:int=3):
    from torch import nn
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, c))

@pytest.mark.parametrize('name', ['digits', 'folder_16px', 'tgz_12px_max8'])
def test_fit_gives_bit_identical_weights(name, tmp_path, cache):
    "Two fits with `get_preds`, `validate` and an interpretation in between: the same weights with the old and the new loaders"
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.interpret import ClassificationInterpretation
    res = []
    for label, impl in (('old', old_impl()), ('new', new_impl())):
        (tmp_path/label).mkdir()
        make = scenarios(tmp_path/label, impl)[name]
        random.seed(0); torch.manual_seed(0); np.random.seed(0)
        dls = make()
        model = small_cnn(dls.c, 1 if name == 'digits' else 3)
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), lr=1e-2)
        with learn.no_bar(), learn.no_logging():
            learn.fit(2)
            preds = [learn.get_preds(ds_idx=i)[0] for i in (0, 1)] + [learn.validate()]
            if label == 'new': ClassificationInterpretation.from_learner(learn)
            else: learn.get_preds(dl=learn.dls[1].new(shuffle=False, drop_last=False), with_loss=True)   # what it does, as the old loaders allow
            learn.fit(1)
        res.append(({k: v.clone() for k, v in model.state_dict().items()}, preds, rng_states()))
    (old_w, old_p, old_s), (new_w, new_p, new_s) = res
    assert all(torch.equal(old_w[k], new_w[k]) for k in old_w), name
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(old_p[:2], new_p[:2])) and old_p[2] == new_p[2]
    assert same_states(old_s, new_s)

def imagenette_cache_file():
    "The real 64 px Imagenette cache of ~/.cache/lth_nbdev, if this machine has one (read only here)"
    files = sorted((Path.home()/'.cache'/'lth_nbdev').glob('imagenette*-64px-*.pt'))
    return next((f for f in files if '-max' not in f.name), None)

@pytest.mark.skipif(imagenette_cache_file() is None, reason="no 64 px Imagenette cache in ~/.cache/lth_nbdev")
def test_real_imagenette_first_batches_match():
    "The first batches of two epochs of the real cache (read, never written), old loaders vs new, with flips, seed 0"
    from lth_nbdev.data import read_cache, imagenet_stats, tensor_dls
    d = read_cache(imagenette_cache_file(), 64)
    args = (d['x_train'], d['y_train'], d['x_valid'], d['y_valid'])
    kw = dict(bs=64, mean=imagenet_stats[0], std=imagenet_stats[1], flip=True, seed=0, device='cpu')
    got = []
    for make in (lambda: loader_old.tensor_dls(*args, **kw), lambda: tensor_dls(*args, **kw, vocab=d['classes'])):
        torch.manual_seed(0); dls = make(); h = []
        for e in range(2):
            for dl, n in ((dls.train, 4), (dls.valid, 2)):
                it = iter(dl)
                h += [batch_digest(next(it)) for _ in range(n)]
        got.append(h)
    assert got[0] == got[1]

# ------------------------------------------------------------------------------------------------------------------
# fastai's paths
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastai.learner import Learner, load_learner
from fastai.interpret import ClassificationInterpretation
from fastai.metrics import accuracy
from fastai.losses import CrossEntropyLossFlat

def trained(dls, channels:int, tmp:Path)->Learner:
    torch.manual_seed(0)
    learn = Learner(dls, small_cnn(dls.c, channels), metrics=accuracy, lr=1e-2, path=tmp)    # the loss comes from the data
    with learn.no_bar(), learn.no_logging(): learn.fit(2)
    return learn

@pytest.fixture
def digits_learner(tmp_path):
    from lth_nbdev.data import digits_dls
    return trained(digits_dls(bs=64, seed=0, device='cpu'), 1, tmp_path)

@pytest.fixture
def folder_learner(tmp_path, cache):
    "A learner on a tiny .tgz of 3 classes x 10 training and 4 validation images of 16 px (cache in a temporary folder)"
    from lth_nbdev.data import imagenette_dls
    arc = make_archive(make_folder(tmp_path/'src'/'tiny'), tmp_path/'tiny.tgz')
    return trained(imagenette_dls(16, bs=8, path=arc, seed=0, device='cpu'), 3, tmp_path)

def test_the_loaders_are_fastai_datasets_and_tfmddls(digits_learner):
    from fastai.data.core import Datasets, TfmdDL, DataLoaders
    from fastai.torch_core import TensorImage, TensorCategory
    dls = digits_learner.dls
    assert isinstance(dls, DataLoaders) and isinstance(dls.train, TfmdDL) and isinstance(dls.valid_ds, Datasets)
    assert str(dls.train_ds.loss_func) == str(digits_learner.loss_func)
    x, y = dls.one_batch()
    assert type(x) is torch.Tensor and type(y) is torch.Tensor and x.dtype == torch.float32 and y.dtype == torch.int64   # as before
    x, y = dls.decode((x, y))                                           # fastai types them back to decode
    assert isinstance(x, TensorImage) and isinstance(y, TensorCategory)
    assert list(dls.vocab) == [str(i) for i in range(10)] and dls.c == 10

def test_a_gathered_batch_equals_fastais_item_by_item_batch(folder_learner):
    "The one-indexing-call batch of `TensorDL` is the batch fastai makes item by item (`test_dl` over the same indices)"
    dl = folder_learner.dls.valid
    ids = list(range(len(dl.dataset)))[:8]
    fast = dl.after_batch(dl.do_batch([dl.do_item(i) for i in ids]))
    slow = next(iter(folder_learner.dls.test_dl(ids, with_labels=True, bs=8)))
    for a, b in zip(fast, slow): assert a.dtype == b.dtype and torch.equal(a, b)

@pytest.mark.parametrize('which', ['digits_learner', 'folder_learner'])
def test_show_batch_draws(which, request):
    learn = request.getfixturevalue(which)
    plt.close('all')
    learn.dls.show_batch(max_n=6)
    axes = [a for a in plt.gcf().axes if a.get_images()]
    assert len(axes) == 6
    assert {a.get_title() for a in axes} <= set(learn.dls.vocab)        # titled with class names
    plt.close('all')

def test_export_load_predict_digits(digits_learner):
    from lth_nbdev.data import digits_tensors
    learn = digits_learner
    learn.export('digits.pkl')
    size = (learn.path/'digits.pkl').stat().st_size
    model_size = sum(p.numel() * p.element_size() for p in learn.model.state_dict().values())
    assert size < model_size + 200_000, size                          # no images in the export
    loaded = load_learner(learn.path/'digits.pkl')
    xt, yt, xv, yv = digits_tensors(seed=0)
    label, idx, probs = loaded.predict(xv[0])
    assert label == str(int(idx)) and probs.shape == (10,) and abs(float(probs.sum()) - 1) < 1e-5
    torch.testing.assert_close(probs, torch.softmax(learn.model.eval()(xv[:1].sub(xt.mean()).div(xt.std())), 1)[0])
    with pytest.raises(ValueError, match=r'must be a torch.float32 tensor of shape \(1, 8, 8\)'): loaded.predict(xv[0, 0])
    from PIL import Image
    with pytest.raises(ValueError, match='PIL image or image file can be predicted on only when the training images are uint8 RGB'):
        loaded.predict(Image.new('RGB', (8, 8)))
    x, y = learn.dls.one_batch()                                        # the learner's own data is untouched by the export
    assert x.shape == (64, 1, 8, 8)

def test_export_load_predict_image_folder(folder_learner, tmp_path):
    from PIL import Image
    from lth_nbdev.data import imagenette_tensors
    learn = folder_learner
    learn.export('tiny.pkl')
    assert (learn.path/'tiny.pkl').stat().st_size < 200_000
    loaded = load_learner(learn.path/'tiny.pkl')
    assert loaded.dls.train_ds.tls[0].tfms.fs[0].images is None          # the export carries no data
    xt, yt, xv, yv, classes = imagenette_tensors(16, tmp_path/'tiny.tgz')
    assert list(loaded.dls.vocab) == classes == ['cat', 'dog', 'fish']
    f = tmp_path/'src'/'tiny'/'val'/'dog'/'0.png'                         # the first validation image of class 'dog'
    i = int((yv == 1).nonzero()[0])
    res = [loaded.predict(o) for o in (xv[i], Image.open(f), str(f), f)]   # a cached uint8 tensor, a PIL image, a file
    for label, idx, probs in res:
        assert label in classes and label == classes[int(idx)]
        torch.testing.assert_close(probs, res[0][2])                     # the file resized as the cache was: the same image
    with pytest.raises(ValueError, match=r'must be a torch.uint8 tensor of shape \(3, 16, 16\)'): loaded.predict(xv[i].float())

@pytest.mark.parametrize('which', ['digits_learner', 'folder_learner'])
def test_classification_interpretation(which, request):
    learn = request.getfixturevalue(which)
    interp = ClassificationInterpretation.from_learner(learn)
    n = len(learn.dls.valid_ds)
    cm = interp.confusion_matrix()
    assert cm.shape == (learn.dls.c, learn.dls.c) and cm.sum() == n
    acc = float(learn.validate()[1])
    assert abs(cm.trace() / n - acc) < 1e-6
    plt.close('all')
    interp.plot_confusion_matrix()
    assert [t.get_text() for t in plt.gca().get_xticklabels()] == list(learn.dls.vocab)
    plt.close('all')
    interp.plot_top_losses(4)
    axes = [a for a in plt.gcf().axes if a.get_images()]
    assert len(axes) == 4 and all('/' in a.get_title() for a in axes)   # 'predicted/actual / loss / probability'
    plt.close('all')
    losses, idx = interp.top_losses(3)
    assert losses.shape == (3,) and (losses[:-1] >= losses[1:]).all()
    interp.most_confused()

def test_structured_pruning_traces_a_batch_as_before(tmp_path, cache):
    "`ChannelGroups` and `slim_model` (torch-pruning's tracing) on a batch of the new loaders: the masks and slim model of the old"
    from torchvision.models import resnet18
    from lth_nbdev.slim import ChannelGroups, slim_model
    from lth_nbdev.callback import SparsifyCallback
    from lth_nbdev.criteria import large_final
    from lth_nbdev.schedules import iterative
    res = []
    for label, impl in (('old', old_impl()), ('new', new_impl())):
        folder = make_folder(tmp_path/label/'tiny', size=32, n_train=8, n_valid=4)
        torch.manual_seed(0)
        learn = Learner(impl['imagenette_dls'](32, bs=8, path=folder, seed=0, device='cpu'), resnet18(num_classes=3), loss_func=CrossEntropyLossFlat())
        example = learn.dls.valid.one_batch()[0][:2].cpu()               # as lth_nbdev.experiments.structured_unit does
        cb = SparsifyCallback(50, ChannelGroups(example), 'local', large_final, iterative, start_epoch=1, lth=True, rewind_epoch=0)
        with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(io.StringIO()): learn.fit(2, cbs=[cb])
        slim = slim_model(learn.model.eval(), example)
        res.append(({k: v.clone() for k, v in learn.model.state_dict().items()}, sum(p.numel() for p in slim.parameters())))
    (old_w, old_n), (new_w, new_n) = res
    assert old_n == new_n and all(torch.equal(old_w[k], new_w[k]) for k in old_w)
