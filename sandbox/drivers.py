"""Source text of the programs the harnesses run inside the sandbox.

Everything here runs in the untrusted process, so nothing here decides a verdict: the drivers
only execute the solution and report raw results (JSON values, tracebacks) for the parent to
judge. Solutions are compiled under the name ``solution.py`` with their own line numbers, so
tracebacks in feedback point at the solution's lines.
"""

from __future__ import annotations

import functools
import marshal
import sys
from pathlib import Path

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


# The call-based and assert-based drivers: sandbox/guest.py, sent as the program's source (it
# runs the solution in a second process; see its docstring for the protocol).
GUEST_SOURCE = (Path(__file__).parent / "guest.py").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=4)
def guest_program(python_version: str) -> str:
    """The driver as the sandbox's program. When the sandbox's interpreter has this
    interpreter's version (``X.Y``, which fixes the bytecode format), the driver is compiled
    here once and shipped as marshalled code (compiling its source costs every run ~3 ms of
    CPU); otherwise as source."""
    if python_version.split(".")[:2] != [str(v) for v in sys.version_info[:2]]:
        return GUEST_SOURCE
    # optimize=2 drops the docstrings: a smaller literal for every run to parse.
    code = marshal.dumps(compile(GUEST_SOURCE, "guest.py", "exec", optimize=2))
    return f"import marshal\nexec(marshal.loads({code!r}))\n"
