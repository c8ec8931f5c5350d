"""Check the docs pages for what a reader of the site should never meet (no quarto needed; reads nbs/ and _proc/):

1. undocumented: every name in a module's `__all__`, and every public method of its classes (fastai's callback events
   and dunders aside), has a doc entry on the module's page: a `show_doc` (nbdev adds one after each exported
   function or class) or, for a constant or a re-exported name, an `#| exports` cell that shows its definition or import;
2. showdoc-cell: no cell holds two `show_doc` calls (only the last would render);
3. output: no saved or rendered output holds `__main__.`, fastai's event keyword arguments (`NoneType=None`), a
   function's repr (`<function ... at 0x...>`), `:builtin_function_or_method` or `np.float64(`;
4. devpath: no page shows a development path (`../shared`, `shared/data`, a `/tmp/` folder, a git worktree).

Entries of tools/docs_pending.txt (`CHECK NAME`) are reported without failing, while they are being fixed.

    python tools/check_docs.py          # after nbdev's processing (tools/test.sh runs it before this)
"""
import ast, json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root/'tools'))
from pending import pending, is_pending
import importlib, inspect, warnings

EVENTS = re.compile(r'^(before|after)_|^(encodes|decodes|setups)$')   # fastai's callback events and Transform methods
WARTS = {'__main__.': r'__main__\.', 'NoneType=None (fastai event kwargs)': r'NoneType=None',
         'a function repr (<function ... at 0x>)': r'<function [\w.<>]+ at 0x', 'a builtin_function_or_method annotation': r':builtin_function_or_method\b',
         'np.float64(': r'np\.float64\('}
DEVPATHS = r'\.\./shared|shared/data|/tmp/(?!outside\.txt)|git worktree'

def src(c): return ''.join(c['source']) if isinstance(c['source'], list) else c['source']
def directives(s): return {m.group(1): m.group(2).strip() for m in re.finditer(r'^#\|\s*([\w-]+):?[ \t]*(.*)$', s, re.M)}
def out_text(o):
    if 'text' in o: return ''.join(o['text'])
    d = o.get('data', {})
    return ''.join(''.join(v) if isinstance(v, list) else str(v) for k, v in d.items() if k.startswith('text/'))
def page_of(nb:Path)->str: return str(nb.relative_to(root/'nbs').with_suffix(''))

def notebooks(): return sorted(p for p in (root/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)

def module_pages()->dict:
    "Module name -> the notebooks that export into it (from the `# %% ../nbs/X.ipynb` markers)"
    res = {}
    for py in sorted((root/'lth_nbdev').glob('*.py')):
        if py.name.startswith('_'): continue
        res[py.stem] = sorted({m for m in re.findall(r'^# %% \.\./nbs/(\S+)\.ipynb', py.read_text(), re.M)})
    return res

def _framework_hook(mod:str, cls:str, meth:str)->bool:
    "Whether `cls.meth` overrides a method of a base class from outside this library (fastai's `encodes`, `create_item`, ...)"
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        c = getattr(importlib.import_module(f'lth_nbdev.{mod}'), cls, None)
    return c is not None and any(meth in vars(b) for b in inspect.getmro(c)[1:] if not b.__module__.startswith('lth_nbdev'))

def public_names(py:Path)->list:
    "`__all__`, and `Class.method` for the public methods of its classes (defined in the class or with @patch)"
    tree = ast.parse(py.read_text())
    names = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, 'id', '') == '__all__' for t in n.targets)), [])
    res = list(names)
    for n in tree.body:
        if isinstance(n, ast.ClassDef) and n.name in names:
            res += [f"{n.name}.{f.name}" for f in n.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and not f.name.startswith('_') and not EVENTS.match(f.name) and not _framework_hook(py.stem, n.name, f.name)]
        if isinstance(n, ast.FunctionDef) and any(getattr(d, 'id', getattr(getattr(d, 'func', None), 'id', '')) == 'patch' for d in n.decorator_list):
            a = n.args.args[0].annotation if n.args.args else None
            cls = getattr(a, 'id', None)
            if cls in names and not n.name.startswith('_') and not EVENTS.match(n.name): res.append(f"{cls}.{n.name}")
    return list(dict.fromkeys(res))

def shown_on(page:str)->set:
    "Names with a doc entry on `page`: show_doc calls nbdev ran (in _proc/), and definitions in `#| exports` cells"
    res = set()
    proc = root/'_proc'/f'{page}.ipynb'
    if proc.exists():
        for c in json.loads(proc.read_text())['cells']:
            if c['cell_type'] != 'code' or not c.get('outputs'): continue
            try: tree = ast.parse(re.sub(r'^#\|.*$', '', src(c), flags=re.M))
            except SyntaxError: continue
            for n in ast.walk(tree):
                if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'show_doc' and n.args:
                    res.add(ast.unparse(n.args[0]))
    for c in json.loads((root/'nbs'/f'{page}.ipynb').read_text())['cells']:
        s = src(c)
        if c['cell_type'] != 'code' or 'exports' not in directives(s): continue
        for n in ast.parse(re.sub(r'^#\|.*$', '', s, flags=re.M)).body:
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []):
                res |= {e.id for e in ast.walk(t) if isinstance(e, ast.Name)}
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)): res.add(n.name)
            if isinstance(n, ast.ImportFrom): res |= {a.asname or a.name for a in n.names}   # a re-export, shown where it comes from
    return res

def check_undocumented():
    res = []
    for mod, pages in module_pages().items():
        shown = set().union(*(shown_on(p) for p in pages)) if pages else set()
        for nm in public_names(root/'lth_nbdev'/f'{mod}.py'):
            if nm not in shown: res.append((f"lth_nbdev.{mod}.{nm}", f"no doc entry on {', '.join(pages) or 'any page'}"))
    return res

def check_showdoc_cells():
    res = []
    for nb in notebooks():
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            s = src(c)
            n = len(re.findall(r'^\s*show_doc\(', s, re.M))
            if c['cell_type'] == 'code' and 'hide' not in directives(s) and n > 1:
                res.append((page_of(nb), f"cell {i} holds {n} show_doc calls: only the last renders"))
    return res

def check_outputs():
    res = []
    for nb in notebooks():
        page = page_of(nb)
        for where, path in (('saved', nb), ('rendered', root/'_proc'/f'{page}.ipynb')):
            if not path.exists(): continue
            for i, c in enumerate(json.loads(path.read_text())['cells']):
                for o in c.get('outputs', []):
                    t = out_text(o)
                    for what, rx in WARTS.items():
                        if m := re.search(rx, t): res.append((page, f"{where} output of cell {i}: {what}: ...{t[max(0, m.start() - 50):m.end() + 30]!r}..."))
    return res

def check_devpaths():
    res = []
    for nb in notebooks():
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            s = src(c)
            if c['cell_type'] == 'code' and ('hide' in directives(s) or directives(s).get('include') == 'false'): s = ''
            elif c['cell_type'] == 'code' and directives(s).get('echo') == 'false': s = ''
            texts = [s] + [out_text(o) for o in c.get('outputs', [])]
            for t in texts:
                if m := re.search(DEVPATHS, t): res.append((page_of(nb), f"cell {i}: ...{t[max(0, m.start() - 40):m.end() + 40]!r}..."))
    return res

if __name__ == '__main__':
    if not (root/'_proc').exists(): sys.exit("_proc/ is missing: run nbdev's processing first (tools/test.sh does)")
    checks = {'undocumented': check_undocumented, 'showdoc-cell': check_showdoc_cells, 'output': check_outputs, 'devpath': check_devpaths}
    fails = 0
    for check, f in checks.items():
        allowed, found = pending(check), f()
        bad = [(k, w) for k, w in found if not is_pending(k, allowed)]
        held = sorted({k for k, _ in found if is_pending(k, allowed)})
        stale = sorted(a for a in allowed if not any(is_pending(k, {a}) for k, _ in found))
        for k, w in bad: print(f"FAIL {check}: {k}: {w}")
        print(f"{check}: {len(bad)} problem(s)" + (f"; pending (tools/docs_pending.txt): {', '.join(held)}" if held else '')
              + (f"; listed but fixed (remove from tools/docs_pending.txt): {', '.join(stale)}" if stale else ''))
        fails += len(bad)
    sys.exit(1 if fails else 0)
