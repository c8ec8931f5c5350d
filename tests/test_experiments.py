"The experiment runner survives a kill: a unit killed mid-epoch is run again, and ends with one valid results file"
import os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest
from lth_nbdev.experiments import read_result, plan, main

def runner(out, *args):
    cmd = [sys.executable, '-m', 'lth_nbdev.experiments', 'lottery', '--dataset', 'digits', '--seeds', '0',
           '--arms', 'dense', 'lth', '--out', str(out), '--threads', '1', *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parent.parent)

@pytest.mark.slow   # 30-40 s: whole runner processes with 20-epoch units (bash tools/test.sh --full, and CI, run it)
def test_killed_unit_is_rerun_once(tmp_path):
    p = runner(tmp_path)
    seen = []
    for line in p.stdout:                          # wait until the lth unit is in its third epoch, then kill it
        seen.append(line)
        if line.startswith('[lottery/lth/seed0] epoch 2/20'): p.send_signal(signal.SIGKILL); break
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, ''.join(seen)
    seed = tmp_path/'seed0'
    assert read_result(seed/'dense.json')['arm'] == 'dense'              # the finished unit is whole
    assert not (seed/'lth.json').exists()                                # the killed one left no results file
    assert not [f for f in os.listdir(seed) if f.endswith('.tmp')]        # and no half-written one
    dense_before = (seed/'dense.json').stat().st_mtime_ns

    p = runner(tmp_path); out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    assert '1 of 2 units done, 1 to run' in out                          # dense was skipped, lth run again
    assert out.count('[lottery/lth/seed0] starting') == 1
    assert out.count('[lottery/lth/seed0] epoch 20/20') == 1
    assert (seed/'dense.json').stat().st_mtime_ns == dense_before        # not rewritten
    assert sorted(f for f in os.listdir(seed) if not f.startswith('.')) == ['dense.json', 'lth.json', 'lth_mask.ticket']
    r = read_result(seed/'lth.json')
    assert r['k'] == int(r['correct'].sum()) and r['n'] == len(r['correct']) == 359
    assert abs(r['sparsity'] - 50) < 0.01 and len(r['epoch_accuracy']) == 20
    assert r['torch'] and r['threads'] == 1 and r['seconds_per_epoch'] > 0

@pytest.mark.slow   # 30-40 s: whole runner processes with 20-epoch units (bash tools/test.sh --full, and CI, run it)
def test_epoch_lines_have_column_names(tmp_path):
    p = runner(tmp_path, '--budget-minutes', '10'); out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    first = next(l for l in out.splitlines() if l.startswith('[lottery/dense/seed0] epoch 1/5'))
    for col in ('train_loss', 'valid_loss', 'accuracy', 'epoch_s', 'elapsed', 'left'): assert col in first
    assert 'sparsity' in next(l for l in out.splitlines() if l.startswith('[lottery/lth/seed0] epoch 1/20'))
    assert 'units left, about' in out
    assert '[lottery/dense/seed0] no finished unit in' in out             # a fresh folder: nothing to time the first unit by
    assert '[lottery/lth/seed0] no finished unit' not in out              # the second is timed by the first

@pytest.mark.slow   # 30-40 s: whole runner processes with 20-epoch units (bash tools/test.sh --full, and CI, run it)
def test_budget_stops_before_a_unit_that_would_not_fit(tmp_path):
    p = runner(tmp_path, '--arms', 'dense'); p.communicate(timeout=300)
    r = read_result(tmp_path/'seed0'/'dense.json')                       # measured: seconds per epoch of this setting
    minutes = r['seconds_per_epoch'] * 10 / 60                           # enough for half of the 20-epoch lth unit
    p = runner(tmp_path, '--budget-minutes', f"{minutes:.6f}"); out, _ = p.communicate(timeout=300)
    assert 'stopping before lottery/lth/seed0' in out, out
    assert not (tmp_path/'seed0'/'lth.json').exists()

@pytest.mark.parametrize('args, message', [
    (['--seeds', '-1'], '--seeds must be integers >= 0'),
    (['--threads', '0'], '--threads must be >= 1'),
    (['--budget-minutes', '-5'], 'budget_minutes must be a number > 0'),
])
def test_bad_arguments(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e: main(['lottery', '--dataset', 'digits', '--out', str(tmp_path), *args])
    assert e.value.code == 2 and message in capsys.readouterr().out

def test_unknown_arm_and_experiment(tmp_path):
    with pytest.raises(ValueError, match="arms may hold dense"): plan('lottery', [0], tmp_path, ['best'])
    with pytest.raises(ValueError, match="accepted: lottery, sweep"): plan('imagenet', [0], tmp_path)

def test_resumed_sweep_counts_the_epochs_of_its_finished_rounds(tmp_path):
    "A sweep stopped in its second pruning round resumes there: its lines go on from epoch 5 of 7, its results say what they leave out"
    from lth_nbdev.experiments import run_experiment, setting_for
    digits, lines = setting_for('digits'), []
    def stop_in_round_2(line):
        lines.append(line)
        if '] epoch 5/7 ' in line: raise KeyboardInterrupt       # Ctrl-C after round 2's ticket; the last checkpoint is round 1's
    with pytest.raises(KeyboardInterrupt):
        run_experiment('sweep', [0], tmp_path, digits, rounds=2, epochs=1, work=tmp_path, log=stop_in_round_2)
    assert not (tmp_path/'seed0'/'search.json').exists()
    assert [l.split('  ')[0] for l in lines if '] epoch ' in l] == [f'[sweep/search/seed0] epoch {i}/7' for i in range(1, 6)]
    lines.clear()
    assert run_experiment('sweep', [0], tmp_path, digits, rounds=2, epochs=1, work=tmp_path, log=lines.append) == ['sweep/search/seed0']
    assert [l.split('  ')[0] for l in lines if '] epoch ' in l] == [f'[sweep/search/seed0] epoch {i}/7' for i in (5, 6, 7)]
    r = read_result(tmp_path/'seed0'/'search.json')
    assert (r['epochs'], r['epochs_before_resume'], len(r['epoch_accuracy'])) == (7, 4, 3)
    assert len(r['rows']) == 1 + 2 * 3 and r['seconds_per_epoch'] > 0      # every round is in the table, resumed or not

@pytest.mark.slow   # 30-40 s: whole runner processes with 20-epoch units (bash tools/test.sh --full, and CI, run it)
def test_two_runners_share_a_folder_seed_by_seed(tmp_path):
    "A second runner started beside a first takes the seed the first does not hold: every unit runs once, and all end valid"
    a = runner(tmp_path, '--seeds', '0', '1'); seen_a = []
    for line in a.stdout:                            # start the second runner once the first is training seed 0
        seen_a.append(line)
        if line.startswith('[lottery/dense/seed0] epoch 1/5'): break
    b = runner(tmp_path, '--seeds', '0', '1'); out_b, _ = b.communicate(timeout=300)
    out_a = ''.join(seen_a) + a.communicate(timeout=300)[0]
    assert a.returncode == b.returncode == 0, out_a + out_b
    # which seed the second meets held depends on how far the first got while the second imported torch: on an idle
    # machine the first can finish seed 0 (digits, seconds) before the second starts, and is then holding seed 1
    assert re.search(r'\[lottery/seed[01]\] skipped: another runner holds', out_b), out_b
    for unit in ('dense/seed0', 'lth/seed0', 'dense/seed1', 'lth/seed1'):       # each unit started by exactly one of them
        assert (out_a + out_b).count(f'[lottery/{unit}] starting') == 1, out_a + out_b
    assert '[lottery/lth/seed0] starting' in out_a                               # the first runner kept the seed it held
    for s in (0, 1):
        for arm in ('dense', 'lth'):
            r = read_result(tmp_path/f'seed{s}'/f'{arm}.json')
            assert (r['arm'], r['seed']) == (arm, s) and r['k'] == int(r['correct'].sum())
