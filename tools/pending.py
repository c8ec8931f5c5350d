"""Read tools/docs_pending.txt: the pages and names that the docs checks (tools/check_overflow.py,
tools/check_docs.py) report without failing, while they are being fixed. One entry a line, `CHECK NAME  # why`:

    overflow 03_sparsifier            # a page (its path under nbs/, without .ipynb)
    undocumented lth_nbdev.search.X   # a public name without a doc entry (`lth_nbdev.slim.ChannelSparsifier.*`: a pattern)
    output 08_search                  # a page whose saved outputs hold __main__., event kwargs or function reprs
    devpath 05_data                   # a page that shows a development path (../shared, /tmp)
    showdoc-cell 03_sparsifier        # a page with two show_doc calls in one cell
"""
from fnmatch import fnmatch
from pathlib import Path
path = Path(__file__).resolve().parent/'docs_pending.txt'

def pending(check:str)->set:
    "The names listed under `check` in tools/docs_pending.txt"
    if not path.exists(): return set()
    res = set()
    for line in path.read_text().splitlines():
        parts = line.split('#', 1)[0].split()
        if len(parts) == 2 and parts[0] == check: res.add(parts[1])
    return res

def is_pending(name:str, allowed:set)->bool:
    "Whether `name` is listed, or matches a listed pattern"
    return any(name == a or fnmatch(name, a) for a in allowed)
