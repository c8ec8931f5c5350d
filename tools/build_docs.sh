#!/usr/bin/env bash
# Build the docs without quarto (these machines cannot install it): nbdev's own processing of the
# notebooks (nbdev-proc-nbs: directives, show_doc, hidden cells), then nbconvert to HTML in docs_html/,
# and README.md from nbs/index.ipynb. Where quarto exists, `nbdev-docs` builds the real site instead.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf _proc docs_html
nbdev-proc-nbs   # runs the cells that import or show_doc: a notebook whose such cell needs earlier names fails here
# nbdev marks processed cells with keys of its own (e.g. `has_sd`) that nbformat's schema rejects: drop them
python - <<'PY'
import json, pathlib
allowed = {'code': {'cell_type', 'execution_count', 'id', 'metadata', 'outputs', 'source'},
           'markdown': {'cell_type', 'id', 'metadata', 'source', 'attachments'},
           'raw': {'cell_type', 'id', 'metadata', 'source', 'attachments'}}
for p in pathlib.Path('_proc').rglob('*.ipynb'):
    nb = json.loads(p.read_text())
    for c in nb['cells']:
        for k in set(c) - allowed.get(c['cell_type'], set(c)): del c[k]
        c.get('metadata', {}).pop('execution', None)   # timing nbdev records, not in the schema either
    p.write_text(json.dumps(nb, indent=1))
PY
mkdir -p docs_html
find _proc -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | while read -r nb; do
  rel=$(dirname "${nb#_proc/}")
  jupyter nbconvert --to html --log-level WARN --output-dir "docs_html/$rel" "$nb"
done
python tools/make_readme.py
echo "docs in docs_html/, README.md written"
