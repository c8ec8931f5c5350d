"""The command, run as a user would: `python -m lth_nbdev.cli` with the interpreter running these tests, so that it is the
package under test that runs (not whichever `lth-ticket` comes first on the PATH)."""
import subprocess, sys, os
from pathlib import Path
import pytest
import lth_nbdev

def run(*args, timeout=600):
    return subprocess.run([sys.executable, '-m', 'lth_nbdev.cli', *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'PYTHONWARNINGS': 'ignore'})

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
    import pandas as pd
    t = pd.read_csv(tmp_path / 'table.csv')
    assert list(t.arm) == ['dense', 'ticket', 'random_reinit', 'ticket', 'random_reinit']

@pytest.mark.parametrize('args, message', [
    (['--rounds', '0'], 'rounds must be an integer >= 1'),
    (['--fraction', '1.5'], 'fraction must be in (0, 1)'),
    (['--data', '/nonexistent/imagenette'], "does not exist"),
    (['--controls', 'shuffle'], "invalid choice: 'shuffle'"),
    (['--rewind-epoch', '9', '--epochs', '2'], 'rewind_epoch must be an integer in [0, epochs=2)'),
])
def test_bad_arguments_exit_2_with_a_message(args, message):
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr, (r.returncode, r.stderr)
