"""Issue 36 on 2 processes (gloo on CPUs; nccl where 2 GPUs exist): every criterion leaves identical weights and masks on
both processes after a pruning fit, DDP broadcasts no mask buffer, and a search stopped after round 1 and resumed on 2
processes gives the per-image results of one never stopped, with each process's own random states."""
import sys
from pathlib import Path
import pytest
import torch, torch.multiprocessing as mp

here = Path(__file__).parent
sys.path.insert(0, str(here))
from distributed_harness import criteria_fits, resume_search, free_port

# CPU processes (gloo, fastai's DistributedTrainer) everywhere; CUDA ones where a GPU exists: nccl through fastai's
# DistributedTrainer with 2 GPUs, else both processes on the one GPU, with gloo (nccl takes one process per GPU) and DDP alone
devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
def _mode(device):
    "(wrap, backend) for `device`"
    if device == 'cpu': return 'fastai', 'gloo'
    return ('fastai', 'nccl') if torch.cuda.device_count() >= 2 else ('ddp', 'gloo')

@pytest.mark.slow   # 85 s on 2 cores shared with two training jobs: 15 fits on 2 processes
@pytest.mark.parametrize('device', devices)
def test_every_criterion_leaves_identical_ranks_and_ddp_broadcasts_no_mask(tmp_path, device):
    mp.spawn(criteria_fits, args=(2, free_port(), str(tmp_path), device, *_mode(device)), nprocs=2)
    r0, r1 = (torch.load(tmp_path/f'rank{r}.pt') for r in (0, 1))
    assert len(r0) == 13 + 2 and list(r0) == list(r1)
    for case in r0:
        a, b = r0[case], r1[case]
        for n in a['params']: assert torch.equal(a['params'][n], b['params'][n]), (case, n)
        assert list(a['masks']) and list(a['masks']) == list(b['masks']), case
        for n in a['masks']: assert torch.equal(a['masks'][n], b['masks'][n]), (case, n)
        assert abs(a['sparsity'] - 50) < 0.5, (case, a['sparsity'])
        # DDP broadcast the batch-norm statistics (3 BatchNorm2d x 3 buffers), and no mask
        assert a['broadcast'] is not None and not any(n.endswith('sparsity_mask') for n in a['broadcast']), (case, a['broadcast'])
        assert len(a['broadcast']) == 9, (case, a['broadcast'])

@pytest.mark.slow   # 150 s on 2 cores shared with two training jobs: three searches on 2 processes
@pytest.mark.parametrize('device', devices)
def test_search_stopped_after_round_1_resumes_exactly_on_two_processes(tmp_path, device):
    out, (wrap, b) = str(tmp_path), _mode(device)
    mp.spawn(resume_search, args=(2, free_port(), out, 'straight', None, device, b, wrap), nprocs=2)
    mp.spawn(resume_search, args=(2, free_port(), out, 'stopped', 3, device, b, wrap), nprocs=2)   # fits: dense, round 1, then stopped as round 2 starts
    from lth_nbdev.search import read_checkpoint
    d = read_checkpoint(tmp_path/'stopped.ckpt')
    assert d['next_round'] == 2 and len(d['rank_rngs']) == 2
    assert not torch.equal(d['rank_rngs'][0]['torch'], d['rank_rngs'][1]['torch'])   # the processes' own streams, both kept
    assert not (tmp_path/'stopped0.pt').exists()
    mp.spawn(resume_search, args=(2, free_port(), out, 'resumed', None, device, b, wrap), nprocs=2)
    for r in (0, 1):
        s, res = torch.load(tmp_path/f'straight{r}.pt'), torch.load(tmp_path/f'resumed{r}.pt')
        assert list(s['correct']) == list(res['correct']) == [(0, 'dense'), (1, 'ticket'), (2, 'ticket')]
        for k in s['correct']: assert torch.equal(s['correct'][k], res['correct'][k]), (r, k)
        for k in s['masks'][2]: assert torch.equal(s['masks'][2][k], res['masks'][2][k]), (r, k)
        for k in s['weights']: assert torch.equal(s['weights'][k], res['weights'][k]), (r, k)
