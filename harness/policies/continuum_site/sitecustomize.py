"""kvbench's shim for the Continuum fork (github Hanchenli/vllm-continuum, vLLM 0.10.2).

Every Python process of a ``policy=continuum`` server imports this file as ``sitecustomize``:
``harness/policies/continuum.py`` makes this folder the server's whole PYTHONPATH. It runs in
the fork's own environment, so it imports nothing of vLLM up front and no kvbench package:
only the hint format, ``harness/hints.py`` (standard library only), loaded by its file path
as the module ``kvbench_hints``.

Why it exists: the fork pins a finished turn's KV only when
``ToolCallEstimator.request_finished`` (``vllm/v1/core/estimate_with_func.py``) finds a tool
name in the turn's output: it decodes the output tokens and takes the first word of the one
```` ```bash ```` block (``ToolCallParser.parse``). kvbench serves random weights with
``--skip-tokenizer-init``: the fork loads no tokenizer, finds no name, ``set_up_pin`` returns
0 and nothing is ever pinned. The shim keeps the fork's decision and only supplies the name
that the output lacks, in this order:

1. the name the fork parsed from the output (left as it is when there is one);
2. the request's own ``this_func_call`` (a top-level field of the fork's API, which the fork
   overwrites at finish) or ``kvb_tool`` in its ``vllm_xargs`` (kvbench's hint, ``hints.TOOL``),
   if sent;
3. ``$KVBENCH_CONTINUUM_TOOL`` (``policy.settings.default_tool``).

With a name, the fork's own rule decides as for a real agent: pin for
``FIXED_THRESHOLD_CONTINUUM`` (2 s) unless that tool's running-mean time exceeds it.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

TARGET = "vllm.v1.core.estimate_with_func"
TOOL_ENV = "KVBENCH_CONTINUUM_TOOL"
HINTS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "hints.py")  # harness/hints.py


def load_hints():
    """``harness/hints.py`` as the module ``kvbench_hints`` (``harness`` is not on the path)."""
    if "kvbench_hints" in sys.modules:
        return sys.modules["kvbench_hints"]
    spec = importlib.util.spec_from_file_location("kvbench_hints", HINTS_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"kvbench continuum shim: cannot load the hint format {HINTS_FILE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kvbench_hints"] = module  # dataclasses look their module up while executing
    spec.loader.exec_module(module)
    return module


hints = load_hints()


def tool_from_request(request):
    """The tool name the client sent with the request, if any."""
    sent = getattr(request, hints.CONTINUUM_TOOL, None)
    if sent:
        return str(sent)
    extra = getattr(getattr(request, "sampling_params", None), "extra_args", None) or {}
    return str(extra.get(hints.TOOL) or "") or None


def patch(module):
    """Wrap ``ToolCallEstimator.request_finished`` with the fallback; refuse another fork."""
    est = getattr(module, "ToolCallEstimator", None)
    if est is None or not hasattr(est, "request_finished") or not hasattr(est, "set_up_pin"):
        raise ImportError(
            f"kvbench continuum shim: {TARGET} has no ToolCallEstimator.request_finished/"
            "set_up_pin; this environment is not the Hanchenli/vllm-continuum fork"
        )
    if getattr(est, "_kvbench_patched", False):
        return
    original = est.request_finished
    default = os.environ.get(TOOL_ENV) or None

    def request_finished(self, request):
        sent = tool_from_request(request)  # read it before the fork overwrites this_func_call
        original(self, request)
        name = sent or default
        if request.this_func_call is None and name:
            request.this_func_call = name
            history = self.job_to_history.get(request.job_id) or [{}]
            history[-1]["func_call"] = name  # the fork learns the tool's time under this name

    est.request_finished = request_finished
    est._kvbench_patched = True
    sys.stderr.write(
        f"kvbench continuum shim: tool-name fallback active (pid {os.getpid()}, "
        f"{TOOL_ENV}={default!r})\n"
    )


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches the fork's estimator module right after it is executed, in any process."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if not any(isinstance(f, PatchOnImport) for f in sys.meta_path):
    sys.meta_path.insert(0, PatchOnImport())
