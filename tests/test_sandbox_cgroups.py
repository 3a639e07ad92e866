"""The per-run cgroup v2 layer: its file protocol (on a stand-in directory, since most machines,
this one included, offer no delegated memory controller), and detection saying why it is absent.
Where the machine has one, the adversarial suite's memfd test runs against the real thing."""

from __future__ import annotations

import os
import subprocess

from sandbox.cgroups import CgroupRoot, RunCgroup, _cgroup2_mount, _own_cgroup, find_root


def test_mount_and_own_cgroup_parsing():
    mounts = ("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
              "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n")
    assert _cgroup2_mount(mounts) == "/sys/fs/cgroup/unified"
    assert _cgroup2_mount("tmpfs /tmp tmpfs rw 0 0\n") is None
    assert _own_cgroup("4:memory:/x\n0::/user.slice/a\n") == "/user.slice/a"
    assert _own_cgroup("4:memory:/x\n") is None


def test_run_cgroup_files(tmp_path):
    cg = RunCgroup(CgroupRoot(str(tmp_path), kill_file=True), str(tmp_path / "run-1-ab"))
    os.mkdir(cg.path)
    (tmp_path / "run-1-ab" / "memory.swap.max").write_text("max")
    cg.set_limits(memory_bytes=128 << 20, processes=16)
    assert (tmp_path / "run-1-ab" / "memory.max").read_text() == str(128 << 20)
    assert (tmp_path / "run-1-ab" / "memory.swap.max").read_text() == "0"
    assert (tmp_path / "run-1-ab" / "pids.max").read_text() == "20"
    (tmp_path / "run-1-ab" / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    assert cg.oom_kills() == 2
    # The joining shell writes "0" (itself) into cgroup.procs, then execs the command.
    out = subprocess.run(cg.join_argv(["/bin/echo", "started"]), capture_output=True, text=True,
                         timeout=10, env={})
    assert out.stdout == "started\n"
    assert (tmp_path / "run-1-ab" / "cgroup.procs").read_text().strip() == "0"


def test_detection_says_why_when_absent():
    root, why = find_root()
    assert (root is None) == (not why.startswith("one cgroup per run")), why
    assert why
