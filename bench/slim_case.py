"""A structured ticket, slimmed: torchvision's ResNet-18 (10 classes) with 50% of its channels removed by
`prune_channels` (coupled groups, L1 of the filters, local), then physically removed by `slim_model`. Dense and slim
are measured side by side in one run:

- parameters, and the slim/dense ratio (target: <= 45%);
- CPU latency of one forward pass in eval mode (`torch.inference_mode`) at batch 32 and at batch 1, 64 px: the
  minimum over `--reps` repetitions (default 5), dense and slim interleaved (the order alternates every repetition),
  after warm-up passes (target at batch 32: slim <= 0.6x dense);
- the size on disk of `torch.save` of each module.

It also checks that the slim model computes what the masked model computes (max abs difference of the logits).
Both models are default-initialized (BatchNorm statistics moved by a few training-mode passes): speed and size do
not depend on what the weights are.

    python bench/slim_case.py                      # the measurement: run it on a quiet machine
    python bench/slim_case.py --reps 1             # a smoke run: says whether the script works, measures nothing
    python bench/slim_case.py --json out.json      # also write the numbers to a file

Exit status 1 if a target is missed (the latency target is judged only with --reps >= 5).
"""
import argparse, copy, json, os, sys, tempfile, time
import torch, torchvision
from lth_nbdev.slim import prune_channels, slim_model

def n_params(model): return sum(p.numel() for p in model.parameters())

def forward_seconds(model, x, inner:int)->float:
    "Seconds per forward pass, averaged over `inner` passes"
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(inner): model(x)
        return (time.perf_counter() - start) / inner

def interleaved_min(models:dict, x, reps:int, inner:int, warmup:int=2)->dict:
    "The minimum over `reps` of each model's seconds per pass, the models taking turns (order reversed every repetition)"
    for m in models.values(): forward_seconds(m, x, warmup)
    times = {k: [] for k in models}
    for r in range(reps):
        for k in (list(models) if r % 2 == 0 else list(models)[::-1]): times[k].append(forward_seconds(models[k], x, inner))
    return {k: min(v) for k, v in times.items()}

def file_bytes(model, folder, name)->int:
    path = os.path.join(folder, name)
    torch.save(model, path)
    return os.path.getsize(path)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--reps', type=int, default=5, help='repetitions per case; the minimum is reported')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1: one core, reproducible on a shared machine)')
    p.add_argument('--sparsity', type=float, default=50., help='percent of the channels removed')
    p.add_argument('--size', type=int, default=64, help='image size in pixels')
    p.add_argument('--batch', type=int, default=32, help='the batch size of the latency target')
    p.add_argument('--inner-batch1', type=int, default=20, help='passes averaged per repetition at batch 1 (one pass is short)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, help='write the results to this file')
    a = p.parse_args()
    torch.manual_seed(a.seed); torch.set_num_threads(a.threads)

    dense = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():                                    # BatchNorm statistics away from their initial values
        for _ in range(3): dense(torch.randn(8, 3, a.size, a.size))
    dense.eval()
    masked = copy.deepcopy(dense)
    example = torch.randn(2, 3, a.size, a.size)
    sp = prune_channels(masked, example, a.sparsity)
    masked.eval()
    slim = slim_model(masked, example).eval()
    check = torch.randn(a.batch, 3, a.size, a.size)
    with torch.no_grad(): diff = float((masked(check) - slim(check)).abs().max())

    res = dict(torch=torch.__version__, threads=a.threads, reps=a.reps, size=a.size, channel_sparsity=sp.global_sparsity(),
               max_abs_diff_masked_vs_slim=diff, params_dense=n_params(dense), params_slim=n_params(slim))
    res['params_ratio'] = res['params_slim'] / res['params_dense']
    for bs, inner in ((a.batch, 1), (1, a.inner_batch1)):
        t = interleaved_min(dict(dense=dense, slim=slim), torch.randn(bs, 3, a.size, a.size), a.reps, inner)
        res[f'latency_ms_batch{bs}'] = dict(dense=1e3 * t['dense'], slim=1e3 * t['slim'], ratio=t['slim'] / t['dense'])
    with tempfile.TemporaryDirectory() as d:
        res['file_bytes'] = dict(dense=file_bytes(dense, d, 'dense.pt'), slim=file_bytes(slim, d, 'slim.pt'))
    res['file_bytes']['ratio'] = res['file_bytes']['slim'] / res['file_bytes']['dense']

    judged = a.reps >= 5
    lat = res[f'latency_ms_batch{a.batch}']
    res['targets'] = dict(params_ratio_le_0_45=res['params_ratio'] <= 0.45,
                          latency_ratio_le_0_6=(lat['ratio'] <= 0.6) if judged else None)
    print(f"torch {torch.__version__}, {a.threads} thread(s); ResNet-18 (10 classes) at {res['channel_sparsity']:.2f}% channel "
          f"sparsity, {a.size} px; minimum of {a.reps} interleaved repetitions")
    print(f"slim vs masked model: max abs difference of the logits {diff:.2g}")
    print(f"{'':24} {'dense':>12} {'slim':>12} {'slim/dense':>11} {'target':>8}  met")
    def row(name, d, s, r, target=None, met=None):
        print(f"{name:24} {d:>12} {s:>12} {r:>11.3f} {target or '':>8}  {'' if met is None else 'yes' if met else 'NO'}")
    row('parameters', f"{res['params_dense']:,}", f"{res['params_slim']:,}", res['params_ratio'], '<= 0.45', res['targets']['params_ratio_le_0_45'])
    for bs in (a.batch, 1):
        l = res[f'latency_ms_batch{bs}']
        row(f'latency, batch {bs} (ms)', f"{l['dense']:.2f}", f"{l['slim']:.2f}", l['ratio'],
            '<= 0.6' if bs == a.batch else None, res['targets']['latency_ratio_le_0_6'] if bs == a.batch else None)
    f = res['file_bytes']
    row('torch.save file (bytes)', f"{f['dense']:,}", f"{f['slim']:,}", f['ratio'])
    if not judged: print(f"(--reps {a.reps}: a smoke run; the latency target is judged with --reps >= 5 on a quiet machine)")
    if a.json:
        with open(a.json, 'w') as fh: json.dump(res, fh, indent=1)
    return 0 if all(v is not False for v in res['targets'].values()) and diff <= 1e-3 else 1

if __name__ == '__main__': sys.exit(main())
