"""The command, run as a user would: `python -m lth_nbdev.cli` with the interpreter running these tests, so that it is the
package under test that runs (not whichever `lth-ticket` comes first on the PATH)."""
import subprocess, sys, os, re, tarfile, io
from pathlib import Path
import pytest
import lth_nbdev

def run(*args, timeout=600, env=None):
    return subprocess.run([sys.executable, '-m', 'lth_nbdev.cli', *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'PYTHONWARNINGS': 'ignore', **(env or {})})

def test_runs_the_package_under_test():
    r = subprocess.run([sys.executable, '-c', 'import lth_nbdev; print(lth_nbdev.__file__)'], capture_output=True, text=True)
    assert Path(r.stdout.strip()) == Path(lth_nbdev.__file__)
    r = run('--help')
    assert r.returncode == 0 and r.stdout.startswith('usage: lth-ticket'), r.stderr

def test_default_search_on_digits_prints_every_round(tmp_path):
    r = run('--rounds', '2', '--epochs', '1', '--out', str(tmp_path / 'table.csv'))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'digits (scikit-learn, 8x8), 1438 training / 359 validation images' in out
    for line in ('    0  dense             0.00%', '    1  ticket           20.00%', '    2  ticket           36.00%', '    2  random_reinit    36.00%'):
        assert line in out, out
    assert '/359, 95% CI' in out
    assert re.search(r'^epoch 0  train_loss \d+\.\d{4}  valid_loss \d+\.\d{4}  accuracy \d\.\d{4}  time \d\d:\d\d$', out, re.M), out   # named columns
    import pandas as pd
    t = pd.read_csv(tmp_path / 'table.csv')
    assert list(t.arm) == ['dense', 'ticket', 'random_reinit', 'ticket', 'random_reinit']
    assert list(t.target) == [0., 20., 20., 36., 36.]                         # 20.0 in the file, not 19.999999999999996
    assert '2 rounds of 20%, 1 epoch each' in out

@pytest.mark.parametrize('args, message', [
    (['--rounds', '0'], 'rounds must be an integer >= 1'),
    (['--fraction', '1.5'], 'fraction must be in (0, 1)'),
    (['--data', '/nonexistent/imagenette'], "does not exist"),
    (['--controls', 'shuffle'], "invalid choice: 'shuffle'"),
    (['--rewind-epoch', '9', '--epochs', '2'], 'rewind_epoch must be an integer in [0, epochs=2)'),
    (['--max-images', '0'], 'max_images must be an integer >= 1'),
    (['--max-images', '-3'], 'max_images must be an integer >= 1'),
    (['--max-images', '1'], '--max-images must be an integer >= 2'),
    (['--fraction', '20'], '--fraction must be in (0, 1), the share of the remaining weights pruned per round (0.2 prunes 20%), got 20'),
    (['--fraction', 'a fifth'], "--fraction must be a number in (0, 1)"),
    (['--lr=-1e-3'], '--lr must be a positive number, got -1e-3'),      # as typed
    (['--epochs', '0'], '--epochs must be an integer >= 1, got 0'),
    (['--bs', '1'], '--bs must be an integer >= 2'),
    (['--granularity', 'vector'], "invalid choice: 'vector'"),
    (['--criteria', 'largest'], "invalid choice: 'largest'"),
    (['--method', 'both'], "invalid choice: 'both'"),
])
def test_bad_arguments_exit_2_with_a_message(args, message):
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr, (r.returncode, r.stderr)

def test_arguments_are_checked_before_torch_is_imported():
    code = ("import sys, lth_nbdev.cli as c\n"
            "try: c.main(['--fraction', '20'])\n"
            "except SystemExit as e: print(e.code, 'torch' in sys.modules, 'fastai' in sys.modules)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ['2', 'False', 'False'], (r.stdout, r.stderr)
    assert '2000%' not in r.stdout + r.stderr and 'got 20' in r.stderr

def test_help_prints_no_warning():
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    r = subprocess.run([sys.executable, '-m', 'lth_nbdev.cli', '--help'], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert '$LTH_DATA' in r.stdout and '--granularity' in r.stdout and '--criteria' in r.stdout and '--method' in r.stdout
    # Python shows a FutureWarning by default (fastai's import raised torch's `torch.jit.script` one): none is printed
    r = subprocess.run([sys.executable, '-c', 'import lth_nbdev.all, lth_nbdev.cli'], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stderr == '', r.stderr

def test_max_images_below_a_batch_lowers_the_batch_and_trains(tmp_path):
    r = run('--max-images', '20', '--rounds', '1', '--epochs', '1', '--controls', env={'PYTHONWARNINGS': ''})   # Python's default filters
    assert r.returncode == 0, r.stderr
    assert 'FutureWarning' not in r.stderr, r.stderr                       # fastai's import warned on every search
    out = r.stdout
    assert 'are fewer than a batch (--bs 64), and fastai drops an incomplete training batch, so nothing would train: using batches of 20 images' in out
    assert '20 training / 20 validation images; 1 round of 20%, 1 epoch each' in out         # singular
    losses = re.findall(r'train_loss (\S+)', out)
    assert len(losses) == 2 and 'nan' not in losses, out

def test_options_for_granularity_criteria_and_method(tmp_path):
    r = run('--rounds', '1', '--epochs', '1', '--controls', '--granularity', 'filter', '--criteria', 'small_final', '--method', 'local',
            '--max-images', '200', '--out', str(tmp_path/'t.csv'))
    assert r.returncode == 0, r.stderr
    assert '1 round of 20%, 1 epoch each, rewind to epoch 0; granularity filter, criteria small_final, method local' in r.stdout, r.stdout
    import pandas as pd
    t = pd.read_csv(tmp_path/'t.csv')
    # whole filters, layer by layer: 3 of 16, 6 of 32 and 6 of 32 in the three convolutions (weights 144, 4608, 9216)
    assert abs(t.sparsity[1] - 100 * (3 * 9 + 6 * 144 + 6 * 288) / (144 + 4608 + 9216)) < 1e-6, t

def test_a_finished_search_says_so_and_a_mismatch_says_what_to_do(tmp_path):
    ck = str(tmp_path/'s.ckpt')
    args = ('--rounds', '1', '--epochs', '1', '--controls', '--max-images', '200', '--checkpoint', ck)
    assert run(*args).returncode == 0
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert 'holds a finished search (all 1 pruning round): nothing left to train' in r.stdout and 'Resuming' not in r.stdout, r.stdout
    assert 'train_loss' not in r.stdout                                       # nothing trained again
    r = run(args[0], '2', *args[2:])
    assert r.returncode == 2
    assert 'made for target sparsities [20] (%), this search targets [20, 36]' in r.stderr, r.stderr
    assert 'give another checkpoint file' in r.stderr and '19.99999' not in r.stderr

def test_an_offline_download_says_what_to_do_and_leaves_no_lock(tmp_path):
    code = ("import urllib.error, fastdownload.core as fc\n"
            "def offline(*a, **k): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')\n"
            "fc.download_url = offline\n"
            "from lth_nbdev.cli import main\n"
            "main(['--dataset', 'imagenette', '--rounds', '1', '--epochs', '1'])")
    env = {k: v for k, v in os.environ.items() if k != 'LTH_DATA'}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                       env={**env, 'FASTAI_HOME': str(tmp_path/'fastai'), 'LTH_CACHE': str(tmp_path/'cache'), 'PYTHONWARNINGS': 'ignore'})
    assert r.returncode == 2, r.stderr
    assert 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr    # one paragraph
    for words in ('could not be downloaded', 'offline', '--data PATH', 'LTH_DATA'): assert words in r.stderr, r.stderr
    assert list((tmp_path/'fastai').rglob('*.lock')) == [] and list((tmp_path/'fastai').rglob('*.tgz')) == []

def test_help_gives_the_cache_location(tmp_path):
    r = run('--help', env={'LTH_CACHE': str(tmp_path/'my cache'), 'COLUMNS': '500'})   # wide: argparse wraps at hyphens
    assert r.returncode == 0 and '--max-images N' in r.stdout
    assert f"resized images cached, in {tmp_path/'my cache'} (set $LTH_CACHE" in r.stdout, r.stdout

def test_max_images_on_an_archive_with_progress(tmp_path):
    "A .tgz of 2 classes x 6 images per split, 4 images used: unpacked and resized with progress, a search runs on 4+4 images"
    from PIL import Image
    arc = tmp_path/'tiny.tgz'
    with tarfile.open(arc, 'w:gz') as t:
        for split in ('train', 'val'):
            for c, col in (('a', (200, 30, 30)), ('b', (30, 30, 200))):
                for i in range(6):
                    b = io.BytesIO(); Image.new('RGB', (20, 16), col).save(b, 'PNG')
                    ti = tarfile.TarInfo(f'tiny/{split}/{c}/{i}.png'); ti.size = len(b.getvalue()); t.addfile(ti, io.BytesIO(b.getvalue()))
    r = run('--data', str(arc), '--max-images', '4', '--size', '16', '--bs', '2', '--rounds', '1', '--epochs', '1',
            '--controls', env={'LTH_CACHE': str(tmp_path/'cache')})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"unpacking tiny.tgz into {tmp_path/'cache'}" in out and 'resizing 4 images of train/ to 16 px' in out
    assert 'resizing 4 images of val/ to 16 px' in out and '4/4' in out      # the progress bar's count
    assert '4 training / 4 validation images' in out
    assert '    1  ticket           20.00%' in out
    assert len(list((tmp_path/'cache').glob('tiny-16px-max4-*.pt'))) == 1
