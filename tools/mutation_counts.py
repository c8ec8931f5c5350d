"""Counts of a mutmut run, whole or partial, by verdict and by module, and the mutants not killed (issue 19).

    cd /tmp/lth_mutation && mutmut results --all true > results.txt && python /path/to/tools/mutation_counts.py results.txt

tools/mutation.sh runs it at the end of every run.

Timeouts count as killed (the mutant made the tests run far past their usual time); "not checked" are mutants a
partial run has not reached, and the percentage is of those that were run."""
import collections, sys

lines = [l.strip() for l in open(sys.argv[1]) if ': ' in l and l.strip().startswith('lth_nbdev.')]
verdicts = [l.rsplit(': ', 1) for l in lines]
total = collections.Counter(v for _, v in verdicts)
by_module = collections.defaultdict(collections.Counter)
for name, v in verdicts: by_module[name.split('.')[1]][v] += 1
run = len(verdicts) - total['not checked']
killed = total['killed'] + total['timeout']
print(f"mutants made: {len(verdicts)}; run: {run}; not run yet: {total['not checked']}")
print(f"killed {total['killed']} + timeout {total['timeout']} = {killed} of {run} run = {100 * killed / max(run, 1):.1f}%; "
      f"survived {total['survived']}; no tests {total['no tests']}")
print("\n| module | made | killed | timeout | survived | no tests | not run |\n|---|---|---|---|---|---|---|")
for m, c in sorted(by_module.items()):
    print(f"| {m} | {sum(c.values())} | {c['killed']} | {c['timeout']} | {c['survived']} | {c['no tests']} | {c['not checked']} |")
print("\nnot killed:")
for name, v in verdicts:
    if v not in ('killed', 'timeout', 'not checked'): print(f"  {name}: {v}")
