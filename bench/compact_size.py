"""Size on disk of a compact ticket file against a dense `torch.save(state_dict)`, for torchvision's ResNet-18
pruned globally by magnitude (Conv2d and Linear layers) to 50% and 90%.

A compact ticket stores each masked weight as a bitmask (numpy.packbits, one bit per weight) plus its kept
float32 values, and every other tensor (biases, batch norm) dense. The values are stored as they are, with no
entropy coding, so the ratio depends on the sparsity and not on what the weights are: an untrained
(default-initialized) network gives the same sizes as a trained one.

    python bench/compact_size.py            # exits with status 1 if a target is missed
"""
import sys, torch
from torchvision.models import resnet18
from lth_nbdev.sparsifier import Sparsifier
from lth_nbdev.tickets import checkpoint_sizes

targets = {50: 0.55, 90: 0.15}      # sparsity (percent) -> the largest acceptable compact/dense ratio

def main():
    torch.manual_seed(0); torch.set_num_threads(1)
    print(f"torch {torch.__version__}; ResNet-18 (torchvision, 1000 classes), global magnitude pruning of Conv2d and Linear")
    print(f"{'sparsity':>9} {'dense bytes':>13} {'compact bytes':>14} {'ratio':>7} {'target':>7}  met")
    ok = True
    for sparsity, limit in targets.items():
        model = resnet18()
        Sparsifier(model, method='global').sparsify_model(sparsity)
        r = checkpoint_sizes(model)
        met = r['ratio'] <= limit; ok &= met
        print(f"{r['sparsity']:8.2f}% {r['dense_bytes']:13,} {r['compact_bytes']:14,} {r['ratio']:7.1%} {limit:7.0%}  {'yes' if met else 'NO'}")
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
