
# --- appended to the scratch copy's tests/conftest.py by tools/mutation.sh (the project's conftest is left alone) ---
# mutmut runs, for each mutant, the tests that reach the mutated function, and stops at the first failure: running the
# fastest first (by the durations its stats phase measured) makes a caught mutant cost seconds instead of minutes.
import json as _json, pathlib as _pathlib
_durations = None

def pytest_collection_modifyitems(items):
    global _durations
    if _durations is None:
        f = _pathlib.Path('mutmut-stats.json')            # written by mutmut after its stats phase, in mutants/
        _durations = _json.loads(f.read_text()).get('duration_by_test', {}) if f.exists() else {}
    if _durations: items.sort(key=lambda item: _durations.get(item.nodeid, 0.))
