"""Run every benchmark of issue 6 and print the tables side by side (markdown).

    python bench/run_all.py            # everything (about 25 minutes when the machine is otherwise idle)
    python bench/run_all.py --quick    # small cases only, and no epoch timing
    python bench/run_all.py --no-epoch # everything but the end-to-end epochs (about 7 minutes)

Each pruning case runs in its own fresh process (`bench/prune_case.py`), so peak memory is that case's
alone. fasterai is an optional bench dependency (`pip install fasterai==0.4.1 --no-deps einops`); it is
skipped, and said so, when it is not installed. A peer is skipped where its peak memory, extrapolated
from its measured bytes per parameter (issue 6: fasterai 7.6 GiB and torch 14.9 GiB at 302M), would not fit
in the memory available now.
"""
import argparse, json, os, subprocess, sys, time
import torch

here = os.path.dirname(os.path.abspath(__file__))
GiB = 2**30
# peak RSS per pruned parameter measured in issue 6 at 302M (model included), used only to decide skips
peer_bytes_per_param = {'fasterai': 7.6 * GiB / 302e6, 'torch': 14.9 * GiB / 302e6}
sizes = {'linear-1M': 1.05e6, 'linear-10M': 10.5e6, 'linear-101M': 100.7e6, 'linear-302M': 302e6,
         'linear-1007M': 1006.6e6, 'resnet18': 11.7e6, 'resnet50': 25.5e6}

def available():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'): return int(line.split()[1]) * 1024

def have_fasterai():
    try: import fasterai.sparse.sparsifier; return True
    except Exception: return False

def run(args, timeout):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(here))
    lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
    if r.returncode or not lines: return [dict(error=(r.stderr.strip().splitlines() or ['failed'])[-1])]
    return [json.loads(l) for l in lines]

def fmt_prune(r):
    if 'skipped' in r: return r['skipped']
    if 'error' in r: return f"error: {r['error'][:60]}"
    return f"{r['seconds']:.2f} s, +{r['peak_extra'] / GiB:.2f} GiB"

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--quick', action='store_true')
    p.add_argument('--reps', type=int, default=3, help='best of this many runs for the cases under 50M parameters')
    p.add_argument('--no-epoch', action='store_true', help='skip the end-to-end epoch timing (section 4)')
    a = p.parse_args()
    cases = ['linear-1M', 'linear-10M', 'resnet18', 'resnet50'] + ([] if a.quick else ['linear-101M', 'linear-302M', 'linear-1007M'])
    libs = ['ours', 'fasterai', 'torch']
    fa = have_fasterai()
    load = os.getloadavg()
    print(f"# lth_nbdev performance ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"MemAvailable {available() / GiB:.1f} GiB, load average at start {load[0]:.1f}; "
          f"fasterai {'0.4.1 installed' if fa else 'NOT installed: skipped'}\n")

    print("## 1. One global 50% `weight` pruning step (time; peak memory above the model's)\n")
    print("| case | params | ours | fasterai 0.4.1 | torch global_unstructured |")
    print("|---|---|---|---|---|")
    results = []
    for case in cases:
        row = {}
        for lib in libs:
            if lib == 'fasterai' and not fa: row[lib] = dict(skipped='not installed'); continue
            if lib != 'ours':
                need = peer_bytes_per_param[lib] * sizes[case]
                if need > 0.9 * available():
                    row[lib] = dict(skipped=f"skipped: needs ~{need / GiB:.0f} GiB, {available() / GiB:.0f} GiB free"); continue
            reps = a.reps if sizes[case] < 50e6 else 1
            row[lib] = run([os.path.join(here, 'prune_case.py'), '--lib', lib, '--case', case, '--reps', str(reps)], timeout=900)[0]
        n = next((r['params'] for r in row.values() if 'params' in r), sizes[case])
        print(f"| {case} | {n / 1e6:.1f}M | " + " | ".join(fmt_prune(row[l]) for l in libs) + " |", flush=True)
        results.append(row)

    mask_runs = 3
    print(f"\n## 2. Keeping masks applied: cost per training step, 50% sparsity (ms; {mask_runs} fresh processes of 50 rounds each)\n")
    print("Each process times one call of each library in turn (the order rotates), 50 rounds after 5 warm-up rounds. "
          "The run-to-run spread (where the tensors land in memory) is larger than the difference between ours and "
          "fasterai, so each case runs in several fresh processes; the paired ratio (ours / fasterai, round by round) "
          "is given for each process.\n")
    print("| case | ours (`_foreach_mul_` by float copies of the masks): best / median of medians | fasterai (`_apply_masks`) | "
          "torch prune (forward pre-hooks) | ours / fasterai: paired median in each process; rounds where ours was faster |")
    print("|---|---|---|---|---|")
    held = []
    for case in ['resnet18', 'resnet50']:
        per_run = []
        for i in range(mask_runs):
            rs = run([os.path.join(here, 'masks_case.py'), '--case', case], timeout=900)
            per_run.append({r['lib']: r for r in rs if r.get('part') == 'apply'})
            if i == 0: held += [r for r in rs if r.get('part') == 'held']
        def cell(l):
            got = [ap[l] for ap in per_run if 'best_ms' in ap.get(l, {})]
            if not got: return per_run[0].get(l, {}).get('skipped', rs[0].get('error', 'n/a'))
            meds = sorted(g['median_ms'] for g in got)
            return f"{min(g['best_ms'] for g in got):.2f} / {meds[len(meds) // 2]:.2f}"
        vs = [ap['ours']['vs_fasterai'] for ap in per_run if 'vs_fasterai' in ap.get('ours', {})]
        ratio = (", ".join(f"{v['median_ratio']:.2f}x" for v in vs) +
                 f"; {sum(v['ours_faster'] for v in vs)}/{sum(v['rounds'] for v in vs)} rounds" if vs else 'n/a')
        print(f"| {case} | {cell('ours')} | {cell('fasterai')} | {cell('torch')} | {ratio} |", flush=True)

    print("\n## 3. Bytes held per parameter of the model during a search\n")
    print("| case | library | masks | float copies of the masks, while training | copy of weights kept by the pruner | rewind point (weights + buffers) | optimizer snapshot (Adam / SGD+momentum) |")
    print("|---|---|---|---|---|---|---|")
    for r in held:
        if r['lib'] == 'ours':
            print(f"| {r['case']} | ours | {r['masks']:.2f} (bool) | {r['step_copies']:.2f} | {r['init_copy']:.2f} (init = rewind point, shared) | "
                  f"{r['rewind_weights']:.2f} | {r['opt_snapshot_adam']:.2f} / {r['opt_snapshot_sgd_momentum']:.2f} |")
        else:
            print(f"| {r['case']} | {r['lib']} | {r['masks']:.2f} (float) | none: the masks are float | {r['init_copy']:.2f} | n/a | n/a |")

    if not (a.quick or a.no_epoch):
        print("\n## 4. End-to-end: one epoch of ResNet-18 on Imagenette at 64 px (CPU), minimum of 5 interleaved runs\n")
        rs = run([os.path.join(here, 'epoch_case.py')], timeout=3600)
        setup = next((r['setup'] for r in rs if 'setup' in r), None)
        if setup: print(f"{setup}. Prune to 50% (global, `weight`, `large_final`, one shot at the first batch), then keep the masks applied.\n")
        print("| arm | epoch (train + valid), s | training phase, s | epoch / dense | training / dense | the 5 epochs, s | callback's own time, share of the rest of the epoch (median of 5) |")
        print("|---|---|---|---|---|---|---|")
        for r in rs:
            if 'summary' in r:
                runs = ", ".join(f"{x['epoch_s']:.1f}" for x in rs if x.get('arm') == r['summary'] and 'epoch_s' in x)
                share = f"{100 * r['callback_share_median']:.2f}%" if r['summary'] != 'dense' else 'no callback'
                print(f"| {r['summary']} | {r['min_epoch_s']:.2f} | {r['min_train_s']:.2f} | {r['epoch_ratio']:.3f}x | {r['train_ratio']:.3f}x | {runs} | {share} |")
            elif 'skipped' in r or 'error' in r: print(f"| {r.get('arm', 'all')} | {r.get('skipped') or r.get('error')} | | | | | |")
    print(f"\nRegenerate: `python bench/run_all.py` (from the repository root, venv active).")

if __name__ == '__main__': main()
