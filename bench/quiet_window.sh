#!/usr/bin/env bash
# Every benchmark that needs the whole machine, one after the other, for a window when nothing else runs
# (no experiment, no tests). Each writes its own file under bench/results/, which the docs' Performance page
# (nbs/performance.ipynb) reads; bench/PERFORMANCE.md explains them. About an hour on 2 idle cores.
#   bash bench/quiet_window.sh            # all of it
#   bash bench/quiet_window.sh slim       # one part: slim, loaders, load, idle
set -uo pipefail
cd "$(dirname "$0")/.."
parts="${*:-slim loaders load idle}"
busy=$(ps -eo pcpu=,args= | awk '$1 > 20' | grep -v "ps -eo" | head -3)
[ -n "$busy" ] && { echo "not quiet: these processes are busy:"; echo "$busy"; echo "(stop them first)"; }
stamp() { echo "== $1: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"; }
for p in $parts; do
  case $p in
    slim)    stamp slim;    python bench/slim_case.py --json bench/results/slim_results.json | tee bench/results/SLIM_RESULTS.md ;;
    loaders) stamp loaders; python bench/loader_epoch.py --data "${LTH_DATA:?set LTH_DATA to an Imagenette folder or .tgz}" | tee bench/results/LOADER_RESULTS.md ;;
    load)    stamp load
             [ -d /tmp/before ] || git worktree add /tmp/before c590bf2     # the library before issue 16's change
             python bench/load_case.py --before /tmp/before | tee bench/results/LOAD_RESULTS.md ;;
    idle)    stamp idle;    python bench/run_all.py | tee bench/results/RESULTS.md ;;
    *) echo "unknown part $p (slim, loaders, load, idle)"; exit 2 ;;
  esac
done
