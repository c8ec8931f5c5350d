__version__ = "0.1.0"

# fastai's import warns that `torch.jit.script` is deprecated: not ours to fix, and not something a user can act on.
# Filtered narrowly, by its message and category, before any module of ours imports fastai.
import warnings as _warnings
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
