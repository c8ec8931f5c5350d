"""Several processes: the command line and `find_ticket` under `torchrun` (2 CPU processes, gloo, fastai's `distrib_ctx`), and
a `DistributedDataParallel` fit against a single process that sees the same global batches."""
import pytest
import os, re, sys, subprocess
from pathlib import Path
import torch, torch.multiprocessing as mp
import pandas as pd

here = Path(__file__).parent
sys.path.insert(0, str(here))
from distributed_harness import digits_search, free_port

def torchrun(*args, n=2):
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}', *args],
                       capture_output=True, text=True, timeout=900, env={**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r.stdout

def test_cli_on_two_processes_prints_one_table_with_the_rows_of_one_process(tmp_path):
    two = torchrun('-m', 'lth_nbdev.cli', '--rounds', '2', '--epochs', '1', '--controls', 'random_reinit', 'random_prune',
                   '--out', str(tmp_path/'two.csv'))
    one = subprocess.run([sys.executable, '-m', 'lth_nbdev.cli', '--rounds', '2', '--epochs', '1', '--controls', 'random_reinit',
                          'random_prune', '--out', str(tmp_path/'one.csv')], capture_output=True, text=True, timeout=600,
                         env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.count('round  arm') == 1 and two.count('lth-ticket: digits') == 1, two     # rank 0 alone prints
    assert '; 2 processes, 64 images a batch each' in two
    assert two.count('Round 2 random_prune:') == 1, two
    t2, t1 = pd.read_csv(tmp_path/'two.csv'), pd.read_csv(tmp_path/'one.csv')
    assert len(t2) == len(t1) == 7
    pd.testing.assert_frame_equal(t2[['round', 'arm', 'target', 'n']], t1[['round', 'arm', 'target', 'n']])
    assert (t2.n == 359).all()                   # every rank scores the whole validation set (gathered)
    assert ((t2.sparsity - t1.sparsity).abs() < 0.01).all()
    # each round's last epoch line counts every validation image once: its accuracy is the table's k/n
    epochs, rounds = re.findall(r'accuracy (\d\.\d{4})  time', two), re.findall(r'^Round \d+ \S+: .*\((\d+)/(\d+), 95% CI', two, re.M)
    assert len(epochs) == len(rounds) == 7, two
    for acc, (k, n) in zip(epochs, rounds): assert n == '359' and abs(float(acc) - int(k) / 359) < 6e-5, (acc, k, n)

@pytest.mark.slow   # 20-40 s: process groups of 2 (bash tools/test.sh --full, and CI, run it); the command line on 2 processes stays in the quick set
def test_find_ticket_and_sparsify_callback_in_distrib_ctx(tmp_path):
    torchrun(str(here/'distributed_harness.py'), str(tmp_path))
    r0, r1 = (torch.load(tmp_path/f'rank{r}.pt', weights_only=False) for r in (0, 1))
    # the checkpoint: written after each of the 3 rounds, by rank 0 alone
    assert r0['writes'] == [str(tmp_path/'search.ckpt')] * 3 and r1['writes'] == []
    assert (tmp_path/'search.ckpt').exists()
    assert r0['rows'] == r1['rows'] == 5 and r0['arms'] == ['dense', 'ticket', 'random_prune', 'ticket', 'random_prune']
    assert r0['n'] == [359] * 5
    assert all(torch.equal(r0['masks'][k], r1['masks'][k]) for k in r0['masks'])          # the same ticket on both ranks
    # SparsifyCallback: the schedule follows the batches each rank runs (half of them), and reaches its target
    assert r0['end_iter'] == r1['end_iter'] == 3 * 11       # 3 epochs of 11 batches: the 22 batches of 64 shared by 2 ranks
    assert abs(r0['fit_sparsity'] - 50) < 0.01 and abs(r1['fit_sparsity'] - 50) < 0.01
    assert all(torch.equal(r0['fit_masks'][k], r1['fit_masks'][k]) for k in r0['fit_masks'])

@pytest.mark.slow   # 20-40 s: process groups of 2 (bash tools/test.sh --full, and CI, run it); the command line on 2 processes stays in the quick set
def test_ddp_ranks_find_the_single_process_ticket(tmp_path):
    out = str(tmp_path)
    mp.spawn(digits_search, args=(2, free_port(), out), nprocs=2)       # 2 ranks x 32 = global batch 64
    digits_search(None, 2, 0, out)
    ranks = [torch.load(tmp_path/f'rank{r}.pt') for r in (0, 1)]
    single = torch.load(tmp_path/'single.pt')
    for k in ranks[0]['masks']:
        assert torch.equal(ranks[0]['masks'][k], ranks[1]['masks'][k]) and torch.equal(ranks[0]['masks'][k], single['masks'][k]), k
    for k, v in ranks[0]['weights'].items():
        if 'running' not in k: assert torch.equal(v, ranks[1]['weights'][k]), k
        assert (v.float() - single['weights'][k].float()).abs().max() < 1e-4, k
    assert abs(ranks[0]['sparsity'] - 60) < 0.01
