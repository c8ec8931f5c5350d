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

@pytest.mark.parametrize('args, message', [
    (['--rounds', '0'], 'rounds must be an integer >= 1'),
    (['--fraction', '1.5'], 'fraction must be in (0, 1)'),
    (['--data', '/nonexistent/imagenette'], "does not exist"),
    (['--controls', 'shuffle'], "invalid choice: 'shuffle'"),
    (['--rewind-epoch', '9', '--epochs', '2'], 'rewind_epoch must be an integer in [0, epochs=2)'),
    (['--max-images', '0'], 'max_images must be an integer >= 1'),
    (['--max-images', '-3'], 'max_images must be an integer >= 1'),
])
def test_bad_arguments_exit_2_with_a_message(args, message):
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr, (r.returncode, r.stderr)

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
