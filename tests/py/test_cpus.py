"""The default of --threads: the CPUs this process may use (affinity and cgroup quota), not the host's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from vllm_router.cpus import cgroup_cpu_quota, usable_cpus


def test_cgroup_v2_quota_is_read_and_max_means_none(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota_is_read_and_minus_one_means_none(tmp_path):
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 2.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (v1 / "cpu.cfs_quota_us").write_text("garbage\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_usable_cpus_never_exceeds_the_affinity_mask():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_threads_default_is_one_under_an_affinity_of_one_core(tmp_path):
    def one_core() -> None:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    out = subprocess.run(
        [sys.executable, "-m", "vllm_router", "run", "--print-config", "--config", str(tmp_path / "absent.toml"),
         "--static-backends", "http://127.0.0.1:9", "--static-models", "m"],
        capture_output=True, text=True, preexec_fn=one_core, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["threads"] == 1
