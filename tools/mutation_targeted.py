"""Run chosen tests against chosen mutants, cheaply: the check bench/results/MUTATION.md calls a targeted run.

mutmut re-runs every test that reaches a mutated function; to see whether one new test kills one survivor, this runs only
that test, in one process, with mutmut's trampoline switched by MUTANT_UNDER_TEST. From a copy of the mutated package:

    mkdir /tmp/mutcheck && cp -r /tmp/lth_mutation/mutants/lth_nbdev /tmp/mutcheck/ && cp -r tests pyproject.toml /tmp/mutcheck/
    cd /tmp/mutcheck && PYTHONPATH=. python /path/to/tools/mutation_targeted.py plan.txt

plan.txt: one line per run, `mutant name<TAB>test node ...`; the name `none` runs the tests on the unmutated code (they
must pass). Prints `RESULT <mutant> KILLED|SURVIVED` per line."""
import os, sys, pytest
os.environ.update(LTH_TEST_THREADS='1', OMP_NUM_THREADS='1', PY_IGNORE_IMPORTMISMATCH='1')
plan = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
for m, nodes in plan:
    os.environ['MUTANT_UNDER_TEST'] = m
    rc = pytest.main(['-x', '-q', '-p', 'no:cacheprovider', '-W', 'ignore', '--no-header', '-s', *nodes.split()], plugins=[])
    print(f"RESULT {m} {'KILLED' if rc == 1 else 'SURVIVED' if rc == 0 else 'rc=' + str(int(rc))}", flush=True)
