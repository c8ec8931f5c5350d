"""One global 50% `weight` pruning step, in a fresh process, timed, with its peak extra memory.

Run by `bench/run_all.py`; by hand: `python bench/prune_case.py --lib ours --case linear-302M`.
Prints one JSON line: seconds (and the process's CPU seconds), peak extra RSS (bytes above the RSS just before pruning), parameters pruned, and the
minor page faults taken during the step (memory touched for the first time, or handed back to the system and
touched again). With `--abs`, it also times one `torch.abs` pass over the same pruned weights in the same process
(best of 3, after the cut), the yardstick of issue 16: a cut should cost at most a few such passes.

Peak memory: the kernel's high-water mark of this process (VmHWM) is reset just before pruning
(`echo 5 > /proc/self/clear_refs`), so the figure is the peak *during* pruning, not while the model was built.
"""
import argparse, json, os, resource, sys, time, warnings
import torch
from torch import nn

warnings.filterwarnings('ignore')

def linear_stack(n_layers, width):
    "`n_layers` bias-free Linear(width, width) with random N(0, 0.02) weights (fast to build at 1B)"
    layers = []
    for _ in range(n_layers):
        m = torch.nn.utils.skip_init(nn.Linear, width, width, bias=False)
        m.weight.requires_grad_(False).normal_(0, 0.02)
        layers.append(m)
    return nn.Sequential(*layers)

def resnet(name):
    import torchvision
    torch.manual_seed(0)
    return getattr(torchvision.models, name)()

# name -> (builder, prunable layer types)
cases = {
    'linear-1M':   (lambda: linear_stack(4, 512),    (nn.Linear,)),      # 1.05M
    'linear-10M':  (lambda: linear_stack(10, 1024),  (nn.Linear,)),      # 10.5M
    'linear-101M': (lambda: linear_stack(6, 4096),   (nn.Linear,)),      # 100.7M
    'linear-302M': (lambda: linear_stack(18, 4096),  (nn.Linear,)),      # 302.0M
    'linear-1007M': (lambda: linear_stack(60, 4096), (nn.Linear,)),      # 1006.6M
    'resnet18':    (lambda: resnet('resnet18'),      (nn.Conv2d, nn.Linear)),
    'resnet50':    (lambda: resnet('resnet50'),      (nn.Conv2d, nn.Linear)),
}

def rss():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

def hwm():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'): return int(line.split()[1]) * 1024

def cpu():
    "CPU seconds of this process so far, all its threads (user + system): on a shared core, the work done, not the wait"
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def reset_hwm():
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')

def prune_ours(model, types):
    from lth_nbdev.sparsifier import Sparsifier
    from lth_nbdev.criteria import large_final
    Sparsifier(model, 'weight', 'global', large_final, layer_type=types).sparsify_model(50)

def prune_fasterai(model, types):
    from fasterai.sparse.sparsifier import Sparsifier
    from fasterai.core.criteria import large_final
    Sparsifier(model, 'weight', 'global', large_final, layer_type=types).sparsify_model(0.5)

def prune_torch(model, types):
    import torch.nn.utils.prune as prune
    params = [(m, 'weight') for m in model.modules() if isinstance(m, types)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.5)

libs = {'ours': prune_ours, 'fasterai': prune_fasterai, 'torch': prune_torch}

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--lib', choices=libs, required=True)
    p.add_argument('--case', choices=cases, required=True)
    p.add_argument('--reps', type=int, default=1, help='time the best of this many runs, each on a fresh copy of the weights')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads(THREADS) first (default: torch\'s own)')
    p.add_argument('--abs', action='store_true', help='also time one torch.abs pass over the same weights (best of 3, after the cut)')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    build, types = cases[a.case]
    fn = libs[a.lib]
    if a.lib == 'fasterai': import fasterai.sparse.sparsifier   # import time is not pruning time
    if a.lib == 'ours': import lth_nbdev.sparsifier
    with torch.no_grad():
        model = build()
        n = sum(m.weight.numel() for m in model.modules() if isinstance(m, types))
        state = {k: v.clone() for k, v in model.state_dict().items()} if a.reps > 1 else None
        times, peaks, faults, cpus = [], [], [], []
        for i in range(a.reps):
            if i:
                model = build(); model.load_state_dict(state)
            import gc; gc.collect()
            before = rss(); reset_hwm()
            f0, t, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter(), cpu()
            fn(model, types)
            times.append(time.perf_counter() - t)
            cpus.append(cpu() - c0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            peaks.append(hwm() - before)
            if a.abs and i == a.reps - 1:
                ws = [m.weight for m in model.modules() if isinstance(m, types)]
                abs_times, abs_cpus = [], []
                for _ in range(3):
                    t, c0 = time.perf_counter(), cpu()
                    for w in ws: torch.abs(w)   # each result dropped at once, as a cut's scores would be
                    abs_times.append(time.perf_counter() - t); abs_cpus.append(cpu() - c0)
            del model
    print(json.dumps(dict(lib=a.lib, case=a.case, params=n, seconds=min(times), peak_extra=max(peaks),
                          page_faults=faults[times.index(min(times))], threads=torch.get_num_threads(),
                          cpu_seconds=cpus[times.index(min(times))],
                          **(dict(abs_seconds=min(abs_times), abs_cpu_seconds=min(abs_cpus)) if a.abs else {}))))

if __name__ == '__main__': main()
