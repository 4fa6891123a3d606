"""What a user types: a Ray pool added by hand, and the pretrain example run on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray.conftest import EXAMPLE, RayCluster

pytestmark = pytest.mark.ray

CORRAL = [sys.executable, "-m", "api.cli"]


def test_corral_run_the_pretrain_example_on_a_ray_pool(tmp_path: Path,
                                                        ray_cluster: RayCluster) -> None:
    env = dict(os.environ, CORRAL_HOME=str(tmp_path / "home"))
    env.pop("CORRAL_DATABASE_URL", None)

    def corral(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CORRAL, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)

    added = corral("pools", "add", "lab", "--backend", "ray", "--ray-address",
                   ray_cluster.address, "--accelerator", "cpu", "--nodes", "2",
                   "--devices-per-node", "1", "--peak-tflops", "0.05")
    assert added.returncode == 0, added.stderr
    ran = corral("run", str(EXAMPLE), "--pool", "lab", timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "SUCCEEDED" in ran.stdout
    shown = corral("show", "1")
    assert "attempt 1 started on ray" in shown.stdout, shown.stdout[-2000:]
