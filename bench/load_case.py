"""Issue 16: the global cut idle and beside one busy process, side by side in one run (markdown tables).

    python bench/load_case.py                       # 302M Linear stack and ResNet-50, 3 fresh processes per case
    python bench/load_case.py --before /tmp/before  # also the library as it was, from a checkout there (an extra column)
    python bench/load_case.py --quick               # small cases (10M Linear stack, ResNet-18), 1 process each: a smoke run

Every figure comes from a fresh process per case and run (`bench/prune_case.py` for the cut, `bench/masks_case.py`
for the per-step mask application), in this order:
1. idle: our cut, with one `torch.abs` pass over the same weights timed in the same process (the cut / abs ratio),
   its extra peak memory; fasterai's cut;
2. loaded: this script starts one busy process (a pure-Python loop, `python -c "while True: pass"`), runs the same
   cuts for ours and fasterai 0.4.1 and the per-step mask application, and stops the busy process at the end (also
   when interrupted). The busy process is a plain child: it runs where the scheduler puts it, on the CPUs this script
   may use (`taskset` on this script limits both).

Ratios: our loaded time over our idle time (medians of the runs), and ours over fasterai under the same load.
fasterai is an optional bench dependency (`pip install --no-deps fasterai==0.4.1 einops`); it is skipped, and said
so, when missing. With `--before DIR`, the children run with `PYTHONPATH=DIR` for an extra "ours before" column
(make DIR with `git worktree add DIR <commit>`).
"""
import argparse, json, os, statistics, subprocess, sys, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
GiB = 2**30

def have_fasterai():
    try: import fasterai.sparse.sparsifier; return True
    except Exception: return False

def child(args, timeout, pythonpath=None):
    "Run a bench script in a fresh process; its JSON lines (or one dict with the error)"
    env = dict(os.environ)
    if pythonpath: env['PYTHONPATH'] = pythonpath + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    try: r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=root, env=env)
    except subprocess.TimeoutExpired: return [dict(error=f'timed out after {timeout} s')]
    lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
    if r.returncode or not lines: return [dict(error=(r.stderr.strip().splitlines() or ['failed'])[-1])]
    return [json.loads(l) for l in lines]

def prune(lib, case, reps, pythonpath=None, timeout=1800):
    args = [os.path.join(here, 'prune_case.py'), '--lib', lib, '--case', case, '--reps', str(reps)]
    return child(args + (['--abs'] if lib == 'ours' else []), timeout, pythonpath)[0]

def masks(case, reps, pythonpath=None):
    rs = child([os.path.join(here, 'masks_case.py'), '--case', case, '--reps', str(reps)], 1800, pythonpath)
    return {r['lib']: r for r in rs if r.get('part') == 'apply'} or {'error': rs[0]}

class Busy:
    "One busy process (a pure-Python loop) for the duration of a `with` block"
    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, '-c', 'while True: pass'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)   # running before the first case starts
        return self
    def __exit__(self, *exc):
        self.p.terminate()
        try: self.p.wait(10)
        except subprocess.TimeoutExpired: self.p.kill(); self.p.wait()

def med(xs): return statistics.median(xs) if xs else float('nan')
def secs(rs): return [r['seconds'] for r in rs if 'seconds' in r]
def runs_cell(rs):
    errs = [r.get('error') or r.get('skipped') for r in rs if 'seconds' not in r]
    ok = ", ".join(f"{s:.2f}" for s in secs(rs))
    return (ok or 'n/a') + (f" (failed: {errs[0][:50]})" if errs else '')

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--quick', action='store_true', help='small cases, one process each: checks that the script runs')
    p.add_argument('--runs', type=int, default=None, help='fresh processes per case and arm (default 3; 1 with --quick)')
    p.add_argument('--before', default=None, help='a checkout of the library as it was, run as an extra column')
    p.add_argument('--no-fasterai', action='store_true')
    a = p.parse_args()
    runs = a.runs or (1 if a.quick else 3)
    linear, resnet = ('linear-10M', 'resnet18') if a.quick else ('linear-302M', 'resnet50')
    cases = [linear, resnet]
    fa = have_fasterai() and not a.no_fasterai
    arms = [('ours', 'ours', None)] + ([('ours before', 'ours', a.before)] if a.before else [])
    peers = [('fasterai', 'fasterai', None)] if fa else []
    reps = lambda case: 3 if case.startswith('resnet') else 1   # ResNet cuts are short: best of 3 runs in the process

    import torch
    load = os.getloadavg()
    print(f"# Issue 16: the global cut idle and beside one busy process ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"torch {torch.__version__}, CPUs this script may use: {sorted(os.sched_getaffinity(0))} of {os.cpu_count()}, "
          f"torch threads in a fresh process: {torch.get_num_threads()}, load average at start {load[0]:.2f}; "
          f"fasterai {'0.4.1' if fa else 'skipped (not installed or --no-fasterai)'}; {runs} fresh process(es) per case and arm"
          + (f"; 'ours before' runs from {a.before}" if a.before else '') + "\n", flush=True)

    idle, loaded, mask_rows = {}, {}, {}
    for case in cases:   # 1. idle
        for name, lib, path in arms + peers:
            idle[case, name] = [prune(lib, case, reps(case), path) for _ in range(runs)]
    with Busy() as busy:   # 2. beside one busy process
        for case in cases:
            for i in range(runs):   # the arms interleaved, run by run: drift in the load hits them alike
                for name, lib, path in arms + peers:
                    loaded.setdefault((case, name), []).append(prune(lib, case, reps(case), path))
        for name, _, path in arms:
            mask_rows[name] = [masks(resnet, 20 if a.quick else 50, path) for _ in range(runs)]
        busy_ok = busy.p.poll() is None
    print("## Idle\n")
    print("| case | arm | cut, s (each run) | one `torch.abs` pass, s (same process) | cut / abs (medians) | cut / abs in CPU seconds (medians) | extra peak memory, GiB (max) | page faults (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        for name, lib, _ in arms + peers:
            rs = idle[case, name]
            ok = [r for r in rs if 'seconds' in r]
            ab = [r['abs_seconds'] for r in ok if 'abs_seconds' in r]
            ratio = f"{med(secs(rs)) / med(ab):.2f}x" if ab else '-'
            ab_cpu = [r['abs_cpu_seconds'] for r in ok if 'abs_cpu_seconds' in r]
            cpu_ratio = f"{med([r['cpu_seconds'] for r in ok]) / med(ab_cpu):.2f}x" if ab_cpu else '-'
            mem = f"+{max(r['peak_extra'] for r in ok) / GiB:.2f}" if ok else 'n/a'
            faults = f"{med([r['page_faults'] for r in ok]):.0f}" if ok else 'n/a'
            print(f"| {case} | {name} | {runs_cell(rs)} | {', '.join(f'{x:.2f}' for x in ab) or '-'} | {ratio} | {cpu_ratio} | {mem} | {faults} |")
    print(f"\n## Beside one busy process (a pure-Python loop started by this script{'' if busy_ok else '; it had DIED before the end'})\n")
    print("| case | arm | idle, s (median) | loaded, s (each run) | loaded / idle (medians) | ours / fasterai, loaded (medians) |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        fa_med = med(secs(loaded.get((case, 'fasterai'), [])))
        for name, _, _ in arms + peers:
            i_med, l_med = med(secs(idle[case, name])), med(secs(loaded[case, name]))
            vs = f"{l_med / fa_med:.2f}x" if name != 'fasterai' and fa else '-'
            print(f"| {case} | {name} | {i_med:.2f} | {runs_cell(loaded[case, name])} | {l_med / i_med:.2f}x | {vs} |")
    print(f"\n## Per-step mask application on {resnet}, beside the busy process (ms; `bench/masks_case.py`, interleaved rounds)\n")
    print("| arm | ours: best / median | fasterai: best / median | ours / fasterai: paired median ratio; rounds ours faster |")
    print("|---|---|---|---|")
    for name, per_run in mask_rows.items():
        for ap in per_run:
            if 'error' in ap: print(f"| {name} | failed: {ap['error'].get('error', '')[:60]} | | |"); continue
            o, f = ap.get('ours', {}), ap.get('fasterai', {})
            fcell = f"{f['best_ms']:.2f} / {f['median_ms']:.2f}" if 'best_ms' in f else f.get('skipped', 'n/a')
            v = o.get('vs_fasterai')
            print(f"| {name} | {o['best_ms']:.2f} / {o['median_ms']:.2f} | {fcell} | "
                  + (f"{v['median_ratio']:.2f}x; {v['ours_faster']}/{v['rounds']} |" if v else "n/a |"))
    print(f"\nRegenerate: `python bench/load_case.py{' --quick' if a.quick else ''}"
          + (f" --before {a.before}" if a.before else '') + "` (from the repository root, venv active, nothing else running).")

if __name__ == '__main__': main()
