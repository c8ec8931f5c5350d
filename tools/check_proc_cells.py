"""List the notebook cells that `nbdev-proc-nbs` (and so `nbdev-docs`) would execute beyond imports, exports and
`show_doc`: cells that import and also compute. Building the docs should run no training, so the test command
fails if there are any. A notebook whose front matter sets `skip_showdoc: true` executes nothing.

    python tools/check_proc_cells.py
"""
import ast, sys, warnings
from pathlib import Path
from fastcore.nbio import read_nb
from nbdev.processors import _do_eval
from nbdev.process import NBProcessor
from nbdev.frontmatter import FrontmatterProc

def _light(tree)->bool:
    "A top-level statement that only imports, defines, or calls show_doc"
    if isinstance(tree, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)): return True
    if isinstance(tree, ast.Expr) and isinstance(tree.value, ast.Call):
        f = tree.value.func
        return getattr(f, 'id', getattr(f, 'attr', '')) in ('show_doc', 'filterwarnings')
    if isinstance(tree, ast.Assign):   # constants and simple names, not calls that compute
        return all(isinstance(n, (ast.Constant, ast.Name, ast.Attribute, ast.Tuple, ast.List, ast.Load, ast.Store)) for n in ast.walk(tree.value))
    return False

def heavy_cells(path):
    nb = read_nb(path)
    p = NBProcessor(path, procs=[FrontmatterProc])
    p.process()
    fm = getattr(p.nb, 'frontmatter_', {}) or {}
    if str(fm.get('skip_showdoc', '')).lower() == 'true': return []
    res = []
    for cell in p.nb.cells:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            if cell.cell_type != 'code' or not _do_eval(cell): continue
        d = cell.directives_
        if d.keys() & {'export', 'exports', 'exporti'}: continue
        trees = cell.parsed_()
        if not all(_light(t) for t in trees): res.append(cell.source)
    return res

if __name__ == '__main__':
    root = Path(__file__).resolve().parent.parent/'nbs'
    bad = {p: h for p in sorted(root.rglob('*.ipynb')) if '.ipynb_checkpoints' not in str(p) and (h := heavy_cells(p))}
    for p, cells in bad.items():
        for src in cells: print(f"--- {p.relative_to(root.parent)}\n{src}\n")
    if bad: sys.exit(f"{sum(map(len, bad.values()))} cell(s) would run when the docs are built: move their imports to a cell of their own")
    print("no cell runs more than imports, exports and show_doc when the docs are built")
