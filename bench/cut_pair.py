"""The idle global cut of two versions of the library, side by side: fresh processes, interleaved run by run.

    git worktree add /tmp/prev e586662        # or any checkout (or a folder holding its `lth_nbdev/`)
    python bench/cut_pair.py --before /tmp/prev --runs 3

Each run is one `bench/prune_case.py --lib ours` process (with `--abs` for the linear stacks), for the library of this
checkout ("now") and the one at `--before` (run with `PYTHONPATH`), alternating which goes first. Prints a markdown table:
each run's seconds, the medians, and now / before on the medians (and on the cut / abs ratios where timed).
"""
import argparse, json, os, statistics, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))

def run(case, path):
    env = dict(os.environ, **({'PYTHONPATH': path} if path else {}))
    cmd = [sys.executable, os.path.join(here, 'prune_case.py'), '--lib', 'ours', '--case', case] + (['--abs'] if case.startswith('linear') else [])
    return json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--before', required=True, help='a checkout of the earlier library')
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--cases', nargs='+', default=['linear-302M', 'resnet50'])
    a = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}; 'before' from {a.before}\n")
    print("| case | arm | cut, s (each run) | median | cut / abs (median) | now / before (medians) |\n|---|---|---|---|---|---|")
    for case in a.cases:
        res = {'now': [], 'before': []}
        for i in range(a.runs):
            for arm in (('now', 'before') if i % 2 == 0 else ('before', 'now')):
                res[arm].append(run(case, None if arm == 'now' else a.before))
        med = {k: statistics.median(r['seconds'] for r in v) for k, v in res.items()}
        for arm in ('before', 'now'):
            ratio = (f"{statistics.median(r['seconds'] / r['abs_seconds'] for r in res[arm]):.2f}x" if 'abs_seconds' in res[arm][0] else '-')
            each = ', '.join(f"{r['seconds']:.3f}" for r in res[arm])
            print(f"| {case} | {arm} | {each} | {med[arm]:.3f} | {ratio} | "
                  + (f"{med['now'] / med['before']:.2f}x |" if arm == 'now' else '- |'))

if __name__ == '__main__': main()
