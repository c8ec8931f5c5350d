#!/usr/bin/env bash
# The project's test command (the README's second command, and what CI runs).
# 1. notebooks and exported modules are in sync: nbdev-export must change nothing;
# 2. every notebook runs (cells flagged `slow`, the long Imagenette runs, are skipped);
# 3. the docs build executes no training: no cell beyond imports, exports and show_doc runs when nbdev processes
#    the notebooks (tools/check_proc_cells.py), and nbdev's processing itself (what nbdev-proc-nbs and nbdev-docs
#    run, without their attempt to install quarto) succeeds;
# 4. the pytest suite in tests/.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(find lth_nbdev -name '*.py' -exec md5sum {} + | sort)
nbdev-export
after=$(find lth_nbdev -name '*.py' -exec md5sum {} + | sort)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev-export changed lth_nbdev/: the notebooks and the exported modules are out of sync"
  diff <(echo "$before") <(echo "$after") || true
  exit 1
fi
echo "notebooks and modules in sync"
python tools/make_readme.py --check
nbdev-test --n-workers 2
python tools/check_proc_cells.py
start=$(date +%s)
python -c "from nbdev.serve import proc_nbs; proc_nbs(force=True)" > /dev/null
echo "nbdev's processing of the notebooks for the docs: $(( $(date +%s) - start )) s"
python -m pytest -q tests
