"""kvbench's server guard for the Continuum fork's server (``--middleware kvbench_guard.Guard``).

The fork's interpreter has only this folder on its path, not kvbench's packages, so this
loads ``harness/guard.py`` (standard library only) by its file path, as ``sitecustomize``
loads the hint format. The fork (vLLM 0.10.2) has vLLM's ``--middleware`` option and adds
the class with ``app.add_middleware`` after its own middleware, so it runs first.
"""

import importlib.util
import os
import sys

GUARD_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "guard.py")  # harness/guard.py


def _load():
    if "kvbench_guard_impl" in sys.modules:
        return sys.modules["kvbench_guard_impl"]
    spec = importlib.util.spec_from_file_location("kvbench_guard_impl", GUARD_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"kvbench guard: cannot load {GUARD_FILE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kvbench_guard_impl"] = module
    spec.loader.exec_module(module)
    return module


Guard = _load().Guard
