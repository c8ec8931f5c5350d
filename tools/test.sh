#!/usr/bin/env bash
# The project's test command (the README's second command, and what CI runs with --full).
# 1. notebooks and exported modules are in sync: nbdev-export must change nothing;
# 2. every notebook runs (cells flagged `slow`, the long Imagenette runs, are skipped), and rewrites no tracked file
#    under nbs/ or results/ (figures the README shows are saved by cells flagged `slow`);
# 3. the docs build executes no training: no cell beyond imports, exports and show_doc runs when nbdev processes
#    the notebooks (tools/check_proc_cells.py), and nbdev's processing itself (what nbdev-proc-nbs and nbdev-docs
#    run, without their attempt to install quarto) succeeds;
# 4. the docs read well: every public name has a doc entry and no output shows `__main__.`, reprs or development paths
#    (tools/check_docs.py), and nothing on any page is wider than its column at 1280 px, in headless Chromium over the
#    local preview (tools/check_overflow.py; skipped, saying so, where Chromium is not installed); pages and names still
#    being fixed are listed in tools/docs_pending.txt;
# 5. the pytest suite in tests/, on as many processes as the machine has cores (pytest-xdist): the quick set, i.e. all
#    but the tests marked `slow` (whole subprocess runs, kills, process groups of 20-40 s each, and three quarters of the
#    reference cases of tests/test_reference.py); with --full, every test.
# Each step prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."
full=0
case "${1:-}" in
  --full) full=1 ;;
  "") ;;
  *) echo "usage: bash tools/test.sh [--full]   (--full: also the tests marked slow, as CI runs them)" >&2; exit 2 ;;
esac
step() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
t0=$(date +%s)
# runs a command and fails, showing what moved, if it changed any file that `$1` lists (with checksums)
unchanged() {
  local list=$1 why=$2; shift 2
  local before after; before=$($list); "$@"; after=$($list)
  if [ "$before" != "$after" ]; then
    echo "FAIL: $why"
    diff <(echo "$before") <(echo "$after") || true
    exit 1
  fi
}
modules() { find lth_nbdev -name '*.py' -exec md5sum {} + | sort; }
# a notebook's run must not rewrite what is committed
tracked() { { git ls-files -z nbs results 2>/dev/null || true; } | xargs -0 -r md5sum 2>/dev/null | sort; }
unchanged modules "nbdev-export changed lth_nbdev/: the notebooks and the exported modules are out of sync" nbdev-export
step "notebooks and modules in sync"
python tools/make_readme.py --check
unchanged tracked "running the notebooks rewrote tracked files (write them only in cells flagged slow):" \
  nbdev-test --n-workers 2 --timing
step "notebooks run, and rewrote no tracked file"
python tools/check_proc_cells.py
start=$(date +%s)
python -c "from nbdev.serve import proc_nbs; proc_nbs(force=True)" > /dev/null
step "nbdev's processing of the notebooks for the docs: $(( $(date +%s) - start )) s"
python tools/check_docs.py
step "docs: every public name documented, no warts or development paths in outputs"
python tools/check_overflow.py
step "docs: nothing wider than its column at 1280 px"
# one torch thread per pytest process: the processes share the cores
if [ "$full" = 1 ]; then LTH_TEST_THREADS=1 python -m pytest -q -n auto -p no:cacheprovider tests
else LTH_TEST_THREADS=1 python -m pytest -q -n auto -p no:cacheprovider -m "not slow" tests; fi
step "pytest ($([ "$full" = 1 ] && echo 'every test' || echo 'quick set; bash tools/test.sh --full runs the slow tests too'))"
