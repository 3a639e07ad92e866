"""The run() API: statuses, limits, measurements, configuration, detection and the CLI."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from sandbox import STATUSES, Limits, Sandbox, SandboxConfig
from sandbox.config import parse_namespace_mode
from sandbox.detect import world_accessible
from sandbox.execute import Prepared
from sandbox.result import classify, decode_wrapper_exit
from sandbox.uids import processes_of

pytestmark = pytest.mark.filterwarnings("ignore::sandbox.detect.SandboxWarning")

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UID_BASE = 63000 + (os.getpid() % 40) * 50


@pytest.fixture(scope="module", params=["auto", "off"], ids=lambda m: f"ns={m}")
def sb(request) -> Sandbox:
    sandbox = Sandbox(SandboxConfig(namespaces=request.param, uid_base=UID_BASE, uid_count=50))
    assert sandbox.get_setup(warn=False).error is None
    return sandbox


def test_ok_with_stdin_and_measurements(sb):
    res = sb.run("import sys\ndata = sys.stdin.read()\nprint(data.upper(), end='')\n"
                 "print('note', file=sys.stderr)\n", stdin="héllo\n")
    assert (res.status, res.exit_code, res.stdout, res.stderr) == ("ok", 0, "HÉLLO\n", "note\n")
    assert 0 < res.wall_s < 5 and res.cpu_s > 0 and res.max_rss_mb > 1


def test_exit_codes_and_statuses(sb):
    assert sb.run("import sys\nsys.exit(3)").exit_code == 3
    res = sb.run("raise ValueError('boom')")
    assert res.status == "runtime_error" and res.exit_code == 1
    assert "ValueError: boom" in res.stderr
    res = sb.run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    assert res.status == "killed" and res.exit_code == -signal.SIGSEGV


def test_syntax_error_is_a_runtime_error(sb):
    res = sb.run("def f(:\n")
    assert res.status == "runtime_error" and "SyntaxError" in res.stderr


def test_cpu_limit_gives_timeout_before_the_wall_clock(sb):
    res = sb.run("while True:\n    pass\n", limits=Limits(timeout_s=60, cpu_s=1))
    assert res.status == "timeout"
    assert res.cpu_s >= 0.9 and res.wall_s < 60  # stopped by RLIMIT_CPU, not the wall clock


def test_large_stdin_that_the_program_ignores_does_not_block(sb):
    res = sb.run("print('ignored')", stdin="x" * (8 << 20), limits=Limits(timeout_s=10))
    assert res.status == "ok" and res.stdout == "ignored\n"


def test_large_stdin_round_trip(sb):
    data = "".join(f"{i}\n" for i in range(300_000))
    res = sb.run("import sys\nsys.stdout.write(sys.stdin.read())", stdin=data,
                 limits=Limits(timeout_s=20))
    assert res.status == "ok" and res.stdout == data


def test_output_exactly_at_the_cap_is_fine(sb):
    res = sb.run("import sys\nsys.stdout.write('y' * 1000)", limits=Limits(output_bytes=1000))
    assert res.status == "ok" and len(res.stdout) == 1000 and not res.stdout_truncated
    res = sb.run("import sys\nsys.stdout.write('y' * 1001)", limits=Limits(output_bytes=1000))
    assert res.status == "output_limit" and len(res.stdout) == 1000 and res.stdout_truncated


def test_invalid_utf8_output_is_replaced(sb):
    res = sb.run("import os\nos.write(1, b'ok\\xff\\n')")
    assert res.stdout == "ok\ufffd\n"


def test_rlimits_as_seen_by_the_program(sb):
    lim = Limits(timeout_s=5, memory_mb=700, file_size_mb=3, open_files=99, processes=21)
    res = sb.run("import resource as r\nfor n in ('AS','CPU','FSIZE','NOFILE','NPROC','CORE'):\n"
                 "    print(n, *r.getrlimit(getattr(r, 'RLIMIT_' + n)))\n", limits=lim)
    got = {line.split()[0]: tuple(map(int, line.split()[1:])) for line in res.stdout.splitlines()}
    assert got == {"AS": (700 << 20, 700 << 20), "CPU": (6, 7), "FSIZE": (3 << 20, 3 << 20),
                   "NOFILE": (99, 99), "NPROC": (21, 21), "CORE": (0, 0)}


def test_program_runs_in_a_fresh_isolated_interpreter(sb):
    res = sb.run("import sys, os\nprint(sys.flags.isolated, sys.flags.dont_write_bytecode)\n"
                 "print(sorted(k for k in os.environ if k not in ('PWD', 'LC_CTYPE')))\n"
                 "print(os.getsid(0) == os.getpid() == os.getpgrp())\n")
    assert res.stdout == "1 1\n[]\nTrue\n"


def test_program_cannot_see_the_project_under_namespaces():
    sb = Sandbox(SandboxConfig(uid_base=UID_BASE, uid_count=50))
    if not sb.get_setup(warn=False).namespaces:
        pytest.skip("no namespaces on this machine")
    res = sb.run(f"import os\nprint(os.path.exists({PROJECT!r}), os.path.exists('/root'))")
    assert res.stdout == "False False\n"


def test_concurrent_runs_from_threads_get_distinct_uids(sb):
    if os.geteuid() != 0:
        pytest.skip("uid isolation needs root")
    from concurrent.futures import ThreadPoolExecutor

    prog = "import os, time\ntime.sleep(0.3)\nprint(os.getuid())"
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: sb.run(prog), range(4)))
    assert all(r.status == "ok" for r in results)
    uids = [int(r.stdout) for r in results]
    assert len(set(uids)) == 4 and uids == [r.uid for r in results]


def test_limits_validation():
    with pytest.raises(ValueError, match="timeout_s"):
        Limits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=-1)
    with pytest.raises(ValueError, match="cpu_s"):
        Limits(cpu_s=float("inf"))
    assert Limits(timeout_s=6).cpu_limit_s == 7 and Limits(cpu_s=2.5).cpu_limit_s == 3


@pytest.mark.parametrize(("text", "mode"), [(None, "auto"), ("", "auto"), ("0", "off"),
                                            ("off", "off"), ("1", "on"), ("bwrap-root",
                                                                          "bwrap-root")])
def test_namespace_switch(text, mode):
    assert parse_namespace_mode(text) == mode
    assert SandboxConfig.from_env({"MOPD_SANDBOX_NAMESPACES": text or ""}).namespaces == mode


def test_bad_namespace_switch_is_an_error():
    with pytest.raises(ValueError, match="MOPD_SANDBOX_NAMESPACES"):
        parse_namespace_mode("maybe")


def test_required_namespaces_that_are_missing_give_sandbox_error(tmp_path):
    # Point the search for bubblewrap at an empty PATH to simulate a machine without it.
    code = (f"import os; os.environ['PATH'] = {str(tmp_path)!r}\n"
            "from sandbox import Sandbox, SandboxConfig\n"
            "r = Sandbox(SandboxConfig(namespaces='on')).run('print(1)')\n"
            "print(r.status, r.error)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.startswith("sandbox_error namespaces required"), out.stderr


def test_missing_layers_warn_loudly_once():
    code = ("import warnings\nwarnings.simplefilter('always')\n"
            "from sandbox import Sandbox, SandboxConfig\n"
            "sb = Sandbox(SandboxConfig(namespaces='off'))\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    sb.run('print(1)'); sb.run('print(2)')\n"
            "    Sandbox(SandboxConfig(namespaces='off')).run('print(3)')\n"
            "print(len(w), w[0].category.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "1 SandboxWarning"
    assert out.stderr.count("WARNING: sandbox layers missing:") == 1
    assert "network namespace" in out.stderr.split("WARNING: sandbox layers missing:")[1]
    assert "network is NOT contained" in out.stderr


def test_classify_precedence():
    kw = {"stderr": "", "cpu_s": 0.1, "cpu_limit_s": 7}
    assert classify(kill_reason="output_limit", exit_code=-9, **kw) == "output_limit"
    assert classify(kill_reason="timeout", exit_code=-9, **kw) == "timeout"
    assert classify(kill_reason=None, exit_code=0, **kw) == "ok"
    assert classify(kill_reason=None, exit_code=-signal.SIGXCPU, **kw) == "timeout"
    assert classify(kill_reason=None, exit_code=-9, stderr="", cpu_s=7.0, cpu_limit_s=7) == \
        "timeout"
    assert classify(kill_reason=None, exit_code=1, stderr="...\nMemoryError\n", cpu_s=0,
                    cpu_limit_s=7) == "memory_limit"
    assert classify(kill_reason=None, exit_code=-6, **kw) == "killed"
    assert classify(kill_reason=None, exit_code=2, **kw) == "runtime_error"
    assert classify(kill_reason=None, exit_code=None, **kw) == "sandbox_error"
    assert set(STATUSES) == {"ok", "runtime_error", "timeout", "memory_limit", "output_limit",
                             "killed", "sandbox_error"}


def test_decode_wrapper_exit():
    assert decode_wrapper_exit(137) == -9 and decode_wrapper_exit(1) == 1
    assert decode_wrapper_exit(128) == 128 and decode_wrapper_exit(255) == 255


def test_world_accessible():
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # pytest's tmp_path is under a 0700 dir
        exe = os.path.join(d, "x")
        with open(exe, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(exe, 0o755)
        os.chmod(d, 0o700)
        ok, why = world_accessible(exe)
        assert not ok and "cannot enter" in why
        os.chmod(d, 0o755)
        assert world_accessible(exe) == (True, "")
        os.chmod(exe, 0o700)
        assert not world_accessible(exe)[0]


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=60, **kw)


def test_cli_run_json(tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("import sys\nprint(sys.stdin.read()[::-1])\nsys.exit(4)\n")
    inp = tmp_path / "in.txt"
    inp.write_text("abc")
    out = _cli("run", str(prog), "--stdin", str(inp), "--timeout", "3", "--memory-mb", "512",
               "--json")
    assert out.returncode == 0  # whatever the program did
    doc = json.loads(out.stdout)
    assert list(doc) == ["status", "exit_code", "stdout", "stderr", "wall_s", "cpu_s",
                         "max_rss_mb"]
    assert (doc["status"], doc["exit_code"], doc["stdout"]) == ("runtime_error", 4, "cba\n")


def test_cli_run_timeout_and_bad_input(tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("while True: pass\n")
    out = _cli("run", str(prog), "--timeout", "0.5", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "timeout"
    out = _cli("run", str(tmp_path / "missing.py"))
    assert out.returncode == 2 and "cannot read program" in out.stderr
    out = _cli("run", str(prog), "--timeout", "-1")
    assert out.returncode == 2


def test_cli_doctor():
    out = _cli("doctor", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    names = [layer["name"] for layer in doc["layers"]]
    assert names[:4] == ["fresh interpreter", "session and process group", "rlimits",
                         "unprivileged uid"]
    # Every limit is printed as a number (a missed f-string once printed "{lim.memory_mb}").
    rl = doc["layers"][2]["detail"]
    assert "{" not in rl and "address space 2048 MiB" in rl, rl
    # The cgroup and seccomp layers are reported, present or absent, with the reason.
    by_name = {layer["name"]: layer for layer in doc["layers"]}
    assert by_name["cgroup v2"]["detail"] and by_name["seccomp filter"]["detail"]
    if not by_name["cgroup v2"]["active"]:
        assert "memory is bounded per process by RLIMIT_AS only" in by_name["cgroup v2"]["detail"]
    assert by_name["seccomp filter"]["active"], by_name["seccomp filter"]["detail"]
    off = _cli("doctor", "--strict", env={**os.environ, "MOPD_SANDBOX_NAMESPACES": "0"})
    assert off.returncode == 1
    assert "network namespace          MISSING" in off.stdout
    assert "network is NOT contained" in off.stdout


def _boot_processes(uid: int | None) -> list[int]:
    """Processes of a sandbox for ``uid``: its uid, or (bubblewrap started as root, before the
    switch) the launcher's command line, which ends with the uid."""
    found = list(processes_of(uid)) if uid is not None else []
    tail = f"\0{uid}\0".encode()
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        with contextlib.suppress(OSError), open(path, "rb") as f:
            cmd = f.read()
            if b"_mopd_boot" in cmd and cmd.endswith(tail):
                found.append(int(path.split("/")[2]))
    return found


def test_sandboxes_stopped_right_after_start_leave_nothing(sb):
    setup = sb.setup
    for _ in range(5):
        prep = Prepared(setup.backend, setup.tools, Limits(), sb.uid_pool, sb.config.work_root)
        uid = prep.uid
        prep.discard()
        assert _boot_processes(uid) == []


def test_prestarted_sandboxes_wait_and_close_cleanly():
    sb = Sandbox(SandboxConfig(uid_base=UID_BASE, uid_count=50))
    first = sb.run("print(1)")
    assert sb._idle == {}  # a single run starts nothing ahead
    second = sb.run("print(2)")
    waiting = [p for lst in sb._idle.values() for p in lst]
    assert len(waiting) == 1 and waiting[0].alive
    third = sb.run("import os\nprint(os.getuid())")  # runs in the pre-started sandbox
    assert [r.stdout for r in (first, second)] == ["1\n", "2\n"] and third.status == "ok"
    assert waiting[0].used and waiting[0].uid is None  # consumed, and its uid released
    if third.uid is not None:
        assert int(third.stdout) == third.uid
    uids = [p.uid for lst in sb._idle.values() for p in lst]
    sb.close()
    assert sb._idle == {} and all(_boot_processes(u) == [] for u in uids)
