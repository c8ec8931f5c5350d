import os, warnings
import torch

# Tests run on the CPU with a fixed number of threads, so that results are reproducible.
torch.set_num_threads(int(os.environ.get('LTH_TEST_THREADS', '2')))
warnings.filterwarnings('ignore', category=FutureWarning)
