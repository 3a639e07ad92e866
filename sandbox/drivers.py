"""Source text of the programs the harnesses run inside the sandbox.

Everything here runs in the untrusted process, so nothing here decides a verdict: the drivers
only execute the solution and report raw results (JSON values, tracebacks) for the parent to
judge. Solutions are compiled under the name ``solution.py`` with their own line numbers, so
tracebacks in feedback point at the solution's lines.
"""

from __future__ import annotations

# LiveCodeBench prepends these imports to every solution (lcb_runner's import_string), so
# solutions that use ``List``, ``defaultdict`` or ``gcd`` without importing them still run.
LCB_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math",
               "random", "statistics", "itertools", "functools", "operator", "io", "sys", "json")
LCB_IMPORTS = (
    "".join(f"from {m} import *\n" for m in LCB_MODULES[:-1])
    + "from json import *\nfrom builtins import *\nfrom typing import *\n"
    + "".join(f"import {m}\n" for m in LCB_MODULES)
    + "sys.setrecursionlimit(50000)\n"
)

SOLUTION_NAME = "solution.py"


def script_program(source: str, prelude: str = "") -> str:
    """main.py that runs ``source`` as ``__main__`` after ``prelude`` (e.g. LCB_IMPORTS),
    keeping the solution's own file name and line numbers in tracebacks."""
    # Uncaught exceptions are printed by the C runtime, which reads source lines from disk and
    # so cannot show solution.py's; the traceback module reads them from linecache.
    return (
        "import linecache as __mopd_lc, sys as __mopd_sys, traceback as __mopd_tb\n"
        "__mopd_sys.excepthook = __mopd_tb.print_exception\n"
        f"__mopd_src = {source!r}\n"
        f"__mopd_lc.cache[{SOLUTION_NAME!r}] = (len(__mopd_src), None, "
        f"__mopd_src.splitlines(True), {SOLUTION_NAME!r})\n"
        f"exec({prelude!r})\n"
        f"__mopd_code = compile(__mopd_src, {SOLUTION_NAME!r}, 'exec')\n"
        "del __mopd_lc, __mopd_src, __mopd_sys, __mopd_tb\n"
        "exec(__mopd_code)\n"
    )


# The call-based driver. Protocol: stdin line 1 is a JSON spec {nonce, source, func_name,
# inputs: [[args...], ...], timeout, prelude}; each result goes to the original stdout as one
# line "<nonce> <json record>"; the solution's own prints are redirected to stderr.
# Records: {"i": -1, "kind": "ready"} after setup, then per test {"i", "kind": "value"|"error"|
# "timeout"|"unserializable", "value": <JSON text>, "error": <traceback>, "t": seconds}.
CALL_DRIVER = r'''
import json as _json, os as _os, signal as _signal, sys as _sys, time as _time
import linecache as _linecache, traceback as _traceback


class _MopdTimeout(BaseException):
    pass


def _mopd_main():
    spec = _json.loads(_sys.stdin.readline())
    nonce = spec["nonce"]
    out = _os.fdopen(_os.dup(1), "w", encoding="utf-8")
    _os.dup2(2, 1)
    null = _os.open(_os.devnull, _os.O_RDONLY)
    _os.dup2(null, 0)
    _sys.stdin = open(_os.devnull)

    def emit(rec):
        out.write(nonce + " " + _json.dumps(rec) + "\n")
        out.flush()

    def trace(exc):
        te = _traceback.TracebackException(type(exc), exc, exc.__traceback__)
        te.stack = _traceback.StackSummary.from_list(
            [f for f in te.stack if f.filename == "solution.py"])
        return "".join(te.format())[-4000:]

    def alarm(signum, frame):
        raise _MopdTimeout()

    _signal.signal(_signal.SIGALRM, alarm)
    timeout = spec["timeout"]
    src = spec["source"]
    _linecache.cache["solution.py"] = (len(src), None, src.splitlines(True), "solution.py")
    ns = {"__name__": "solution", "__builtins__": __builtins__}
    fn = spec["func_name"]
    try:
        _signal.setitimer(_signal.ITIMER_REAL, timeout)
        try:
            exec(spec["prelude"], ns)
            exec(compile(src, "solution.py", "exec"), ns)
            # LiveCodeBench: LeetCode solutions are methods of Solution(); otherwise a function.
            method = getattr(ns["Solution"](), fn) if "class Solution" in src else ns[fn]
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
    except _MopdTimeout:
        emit({"i": -1, "kind": "timeout"})
        return
    except BaseException as e:
        emit({"i": -1, "kind": "error", "error": trace(e)})
        return
    emit({"i": -1, "kind": "ready"})
    for i, args in enumerate(spec["inputs"]):
        t0 = _time.perf_counter()
        try:
            _signal.setitimer(_signal.ITIMER_REAL, timeout)
            try:
                value = method(*args)
            finally:
                _signal.setitimer(_signal.ITIMER_REAL, 0)
        except _MopdTimeout:
            emit({"i": i, "kind": "timeout", "t": _time.perf_counter() - t0})
            continue
        except BaseException as e:
            emit({"i": i, "kind": "error", "error": trace(e), "t": _time.perf_counter() - t0})
            continue
        t = _time.perf_counter() - t0
        if isinstance(value, tuple):
            value = list(value)
        try:
            text = _json.dumps(value)
        except BaseException as e:
            emit({"i": i, "kind": "unserializable", "t": t,
                  "error": type(value).__name__ + ": " + type(e).__name__})
            continue
        emit({"i": i, "kind": "value", "value": text, "t": t})


_mopd_main()
'''


# Appended after HumanEval's ``check(entry_point)``: echoes the per-run nonce that only stdin
# carries, so the line appears on stdout only if check() returned (an ``exit(0)`` earlier, in
# the completion or the tests, leaves it out). The nonce is in no file the program can read.
ASSERT_TRAILER = (
    "\nimport sys as __mopd_sys\n"
    "__mopd_sys.stdout.write(__mopd_sys.stdin.readline())\n"
    "__mopd_sys.stdout.flush()\n"
)
