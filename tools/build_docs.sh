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
python tools/preview_html.py
