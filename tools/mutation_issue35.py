"""Hand-made mutants of the issue-35 changes, each run against the tests written for it, in a scratch copy (/tmp/mut/copy).

    python tools/mutation_issue35.py [mutant name ...]     # prints: name<TAB>tests<TAB>KILLED/SURVIVED ("none": the unmutated code)
"""
import subprocess, shutil, sys, os
from pathlib import Path
src = Path(__file__).resolve().parent.parent; work = Path('/tmp/mut/copy')
mutants = [
 ('none', None, None, None, 'tests/test_first_hour.py tests/test_cli.py'),
 ('check_dense: no zeros check', 'search.py', "if pruned or zeros > 0.01 * total:", "if pruned:", 'tests/test_first_hour.py::test_readme_block_2_after_block_1_is_refused_with_what_to_do'),
 ('check_dense: no mask check', 'search.py', "if pruned or zeros > 0.01 * total:", "if zeros > 0.01 * total:", 'tests/test_first_hour.py::test_readme_block_2_after_block_1_is_refused_with_what_to_do'),
 ('check_dense: threshold 60%', 'search.py', "if pruned or zeros > 0.01 * total:", "if pruned or zeros > 0.6 * total:", 'tests/test_first_hour.py::test_readme_block_2_after_block_1_is_refused_with_what_to_do'),
 ('check_dense: never called', 'search.py', "    if self.next_round == 0:\n        try: self._check_dense()", "    if False:\n        try: self._check_dense()", 'tests/test_first_hour.py::test_readme_block_2_after_block_1_is_refused_with_what_to_do'),
 ('check_dense: masks not detached', 'search.py', "        try: self._check_dense()\n        except ValueError:\n            for m in self._added_masks: detach_mask(m)", "        try: self._check_dense()\n        except ValueError:\n            for m in []: detach_mask(m)", 'tests/test_first_hour.py::test_readme_block_2_after_block_1_is_refused_with_what_to_do'),
 ('default layer_type Conv+Linear', 'search.py', "if layer_type is None: layer_type = default_layer_type(learn.model)", "if layer_type is None: layer_type = (nn.Conv2d, nn.Linear)", 'tests/test_first_hour.py::test_find_ticket_prunes_convolutions_by_default'),
 ('targets not rounded', 'search.py', "return [round(100 * (1 - (1 - fraction) ** k), 10)", "return [(100 * (1 - (1 - fraction) ** k))", 'tests/test_cli.py::test_default_search_on_digits_prints_every_round'),
 ('finished says resuming', 'search.py', "if self.next_round > len(self.sparsities): self._say(", "if False: self._say(", 'tests/test_cli.py::test_a_finished_search_says_so_and_a_mismatch_says_what_to_do'),
 ('mismatch prints floats', 'search.py', '''def show(s): return '[' + ', '.join(f"{x:.10g}" for x in s) + ']\'''', '''def show(s): return str(list(s))''', 'tests/test_cli.py::test_a_finished_search_says_so_and_a_mismatch_says_what_to_do'),
 ('download leaves lock', 'data.py', "for f in made: f.unlink(missing_ok=True)", "pass", 'tests/test_cli.py::test_an_offline_download_says_what_to_do_and_leaves_no_lock'),
 ('download error not caught', 'cli.py', "except (ValueError, FileNotFoundError, ImportError, ConnectionError) as e:", "except (ValueError, FileNotFoundError, ImportError) as e:", 'tests/test_cli.py::test_an_offline_download_says_what_to_do_and_leaves_no_lock'),
 ('batch not lowered', 'cli.py', "    if per_rank >= a.bs: return", "    return", 'tests/test_cli.py::test_max_images_below_a_batch_lowers_the_batch_and_trains'),
 ('max-images 1 allowed', 'cli.py', "a.max_images is not None and a.max_images < 2", "a.max_images is not None and a.max_images < 1", 'tests/test_cli.py::test_bad_arguments_exit_2_with_a_message'),
 ('plural always', 'cli.py', "return f\"{n} {word}{'' if n == 1 else 's'}\"", "return f\"{n} {word}s\"", 'tests/test_cli.py::test_max_images_below_a_batch_lowers_the_batch_and_trains'),
 ('torch imported first', 'cli.py', "import os, sys, time, argparse, warnings\n", "import os, sys, time, argparse, warnings\nimport torch\n", 'tests/test_cli.py::test_arguments_are_checked_before_torch_is_imported'),
 ('cli warning not filtered', 'cli.py', "        warnings.filterwarnings('ignore', message=r'`torch\\.jit\\.script` is deprecated', category=FutureWarning)   # fastai's import\n        import torch", "        import torch", 'tests/test_cli.py::test_max_images_below_a_batch_lowers_the_batch_and_trains'),
 ('all: random star-imported', 'all.py', "_shadowing = {'random', 'imagenet_stats', 'atomic_save'}", "_shadowing = {'imagenet_stats', 'atomic_save'}", 'tests/test_first_hour.py::test_star_imports_keep_pythons_random'),
 ('lth-data not in help', 'cli.py', '"$LTH_DATA, if set, is used as --data', '"if set, is used as --data', 'tests/test_cli.py::test_help_prints_no_warning'),
 ('no --granularity passed', 'cli.py', "granularity=a.granularity, criteria=a.criteria, method=a.method,", "", 'tests/test_cli.py::test_options_for_granularity_criteria_and_method'),
]
only = sys.argv[1:]
for name, f, old, new, tests in mutants:
    if only and name not in only: continue
    if work.exists(): shutil.rmtree(work)
    work.mkdir(parents=True)
    for d in ('lth_nbdev', 'tests'): shutil.copytree(src/d, work/d, ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(src/'pyproject.toml', work)
    if f:
        p = work/'lth_nbdev'/f; s = p.read_text()
        assert s.count(old) == 1, (name, s.count(old))
        p.write_text(s.replace(old, new))
    env = {**os.environ, 'PYTHONPATH': str(work), 'LTH_TEST_THREADS': '1'}
    r = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', '-p', 'no:xdist', *tests.split()], cwd=work, env=env,
                       capture_output=True, text=True)
    verdict = ('tests pass' if r.returncode == 0 else f'FAIL rc={r.returncode}') if not f else ('KILLED' if r.returncode == 1 else 'SURVIVED' if r.returncode == 0 else f'rc={r.returncode}')
    print(f"{name}\t{tests}\t{verdict}", flush=True)
    if not f and r.returncode: print(r.stdout[-3000:])
