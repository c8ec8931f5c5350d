#!/usr/bin/env bash
# The mutation check of issue 19: mutmut (pip install -e ".[mutation]") changes the exported modules criteria, granularity,
# schedules, sparsifier and callback one small edit at a time ("mutants") and runs the fast test subset named in
# tools/mutmut.toml against each; a mutant no test notices "survives". The last result and every survivor's reading
# are in bench/results/MUTATION.md. It works on a scratch copy (lth_nbdev/, tests/, pyproject.toml + tools/mutmut.toml, and
# tests/conftest.py + tools/mutation_conftest.py, which runs the fastest tests first), so the
# checkout is left alone, and it is not part of tools/test.sh (nor of CI): a whole run is about 6 hours of one core's test time
# (2 mutants at a time: about 3 hours on 2 cores; a survivor runs the whole subset, about a minute), so it spans sessions
# with MUTATION_RESUME=1 (bench/results/MUTATION.md). Keep tests/test_cut_threads.py out of the subset: mutmut forks each mutant's
# tests from a process that ran them, and after its thread tests the forked processes hang; run it against the thread-path
# survivors with tools/mutation_targeted.py instead.
# Run it from the environment the project is installed in (`. .venv/bin/activate`).
#   tools/mutation.sh                    # a fresh run, then print the counts and the survivors
#   MUTATION_DIR=/tmp/x MUTATION_CHILDREN=1 tools/mutation.sh
#   MUTATION_RESUME=1 tools/mutation.sh  # keep the scratch copy's results (mutants/*.meta), copy in the current library and
#                                        # tests, and run only the mutants without a verdict (mutmut re-runs those of changed
#                                        # functions; a verdict reached with older tests stands)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${MUTATION_DIR:-/tmp/lth_mutation}"
if [ "${MUTATION_RESUME:-0}" = 1 ] && [ -d "$work/mutants" ]; then
  cp -r "$root/lth_nbdev" "$root/tests" "$work/"
else
  rm -rf "$work" && mkdir -p "$work"
  cp -r "$root/lth_nbdev" "$root/tests" "$root/pyproject.toml" "$work/"
  cat "$root/tools/mutmut.toml" >> "$work/pyproject.toml"
fi
cat "$root/tools/mutation_conftest.py" >> "$work/tests/conftest.py"
find "$work" -name __pycache__ -prune -exec rm -rf {} +
cd "$work"
# one thread per test process: the forked mutant runs must not share an OpenMP pool, and small tensors are fastest that way
export LTH_TEST_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore
start=$(date +%s)
mutmut run --max-children "${MUTATION_CHILDREN:-2}" || true
echo "wall time: $(( $(date +%s) - start )) s"
mutmut results --all true > "$work/results.txt" 2>&1 || mutmut results > "$work/results.txt" 2>&1 || true
python "$root/tools/mutation_counts.py" "$work/results.txt"
