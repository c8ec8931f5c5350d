#!/usr/bin/env bash
# Build the docs without quarto (these machines cannot install it): nbdev's own processing of the
# notebooks (nbdev-proc-nbs: directives, show_doc, hidden cells), then nbconvert to HTML in docs_html/,
# and README.md from nbs/index.ipynb. Where quarto exists, `nbdev-docs` builds the real site instead.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf _proc docs_html
src=_proc
if ! nbdev-proc-nbs; then
  # nbdev-proc-nbs runs the cells that import or show_doc; one that needs an earlier cell's names fails it.
  # Render the source notebooks as they are rather than leave no preview.
  echo "nbdev-proc-nbs failed: rendering nbs/ directly (directives such as #| export stay visible)"
  rm -rf _proc; cp -r nbs _proc
fi
mkdir -p docs_html
find "$src" -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | while read -r nb; do
  rel=$(dirname "${nb#_proc/}")
  jupyter nbconvert --to html --log-level WARN --output-dir "docs_html/$rel" "$nb"
done
jupyter nbconvert --to markdown --log-level WARN --output README --output-dir . _proc/index.ipynb
# links in the README point to the docs pages
sed -i -E 's/\]\(([A-Za-z0-9_/]+)\.ipynb\)/](https:\/\/lth-nbdev.github.io\/lth_nbdev\/\1.html)/g' README.md
echo "docs in docs_html/, README.md written"
