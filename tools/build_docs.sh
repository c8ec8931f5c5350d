#!/usr/bin/env bash
# Build the docs. With quarto on the PATH this is nbdev's own `nbdev-docs` (the site the GitHub Pages workflow
# publishes). Without it (these machines cannot install quarto), a local preview in docs_html/: nbdev's processing
# of the notebooks (nbdev-proc-nbs: directives, show_doc, hidden cells, front matter), then nbconvert to HTML with
# no prompts, the front matter as the page title, quarto's cell options applied where HTML can (echo, output),
# and math rendered by MathJax installed from the npm registry into docs_html/ (so the pages work offline).
# Either way README.md is written from nbs/index.ipynb.
set -euo pipefail
cd "$(dirname "$0")/.."
python tools/make_readme.py
if command -v quarto >/dev/null 2>&1; then
  nbdev-docs
  echo "site in _docs/ (nbdev-docs)"
  exit 0
fi
rm -rf _proc docs_html
start=$(date +%s)
python -c "from nbdev.serve import proc_nbs; proc_nbs(force=True)"   # what nbdev-proc-nbs does, without trying to install quarto
echo "nbdev's processing: $(( $(date +%s) - start )) s"
mkdir -p docs_html
if [ ! -f .docs_tools/node_modules/mathjax/MathJax.js ]; then
  npm install --prefix .docs_tools mathjax@2.7.9 --no-audit --no-fund --silent
fi
cp -r .docs_tools/node_modules/mathjax docs_html/mathjax
python - <<'PY'
import json, re, pathlib, yaml, nbformat
from nbconvert import HTMLExporter
from traitlets.config import Config
allowed = {'code': {'cell_type', 'execution_count', 'id', 'metadata', 'outputs', 'source'},
           'markdown': {'cell_type', 'id', 'metadata', 'source', 'attachments'},
           'raw': {'cell_type', 'id', 'metadata', 'source', 'attachments'}}
def opts(src): return dict(re.findall(r'^#\|\s*([\w-]+):\s*(.*?)\s*$', src, re.M))
for p in sorted(pathlib.Path('_proc').rglob('*.ipynb')):
    if '.ipynb_checkpoints' in p.parts: continue
    nb = json.loads(p.read_text())
    cells, title = [], p.stem
    for c in nb['cells']:
        for k in set(c) - allowed.get(c['cell_type'], set(c)): del c[k]      # nbdev's own keys (e.g. `has_sd`) are not in the schema
        c.get('metadata', {}).pop('execution', None)
        src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        if c['cell_type'] == 'raw' and src.startswith('---'):               # front matter -> the page's title and summary
            fm = yaml.safe_load(src.strip().strip('-')) or {}
            title = fm.get('title', title)
            cells.append(dict(cell_type='markdown', metadata={}, source=f"# {title}\n\n*{fm.get('description', '')}*"))
            continue
        if c['cell_type'] == 'code':
            o = opts(src)
            if o.get('echo') == 'false' and o.get('output') == 'asis':           # show_doc: its markdown output, as the site shows it
                for out in c.get('outputs', []):
                    md = out.get('data', {}).get('text/markdown')
                    if md: cells.append(dict(cell_type='markdown', metadata={}, source=md))
                continue
            if o.get('output') == 'false': c['outputs'] = []
            c['source'] = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip('\n')
            if o.get('echo') == 'false': c['metadata']['tags'] = ['remove_input']
        cells.append(c)
    nb['cells'] = cells
    nb.setdefault('metadata', {})['title'] = title
    rel = p.relative_to('_proc')
    depth = len(rel.parts) - 1
    cfg = Config()
    cfg.TagRemovePreprocessor.enabled, cfg.TagRemovePreprocessor.remove_input_tags = True, {'remove_input'}
    cfg.HTMLExporter.preprocessors = ['nbconvert.preprocessors.TagRemovePreprocessor']
    exp = HTMLExporter(config=cfg, template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True,
                       mathjax_url='../' * depth + 'mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe')
    html, _ = exp.from_notebook_node(nbformat.from_dict(nb))
    out = pathlib.Path('docs_html')/rel.with_suffix('.html')
    out.parent.mkdir(parents=True, exist_ok=True); out.write_text(html)
print("docs in docs_html/")
PY
