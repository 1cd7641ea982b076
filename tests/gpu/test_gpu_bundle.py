"""The GPU check bundle end to end, short of the GPU: make gpu-bundle (or
the tarball $GPU_BUNDLE names), unpacked into a temporary directory, its
run-gpu-check.sh run with a few steps and a short budget on this machine,
where the CUDA plugin steps aside (no driver: cudaGetDeviceCount error 35)
and the rest runs on the CPU and OpenCL devices."""

import os
import re
import subprocess
import tarfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUNDLE = os.path.join(ROOT, "build", "gpu-bundle.tar.gz")
MAX_BYTES = 64 << 20
STEPS = "llm_layer_moe llm_layer_dense test_cuda_loader bench_devices test_llm_layer"
BUDGET = 120


@pytest.fixture(scope="module")
def bundle():
    path = os.environ.get("GPU_BUNDLE")
    if path:
        return path
    if not os.path.exists(os.path.join(ROOT, "build", "lib", "tandem-cuda.so")):
        pytest.skip("no CUDA plugin in build/ (nvcc was not found): no bundle to make")
    # A make of its own, not a job of the make that runs the tests.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "-s", "-C", ROOT, "gpu-bundle"], env=env, capture_output=True,
                       text=True, timeout=900)
    if r.returncode != 0 and "cannot download" in r.stderr:
        pytest.skip("gpu-bundle: Debian packages cannot be downloaded here: " + r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout)
    return BUNDLE


@pytest.fixture(scope="module")
def unpacked(bundle, tmp_path_factory):
    size = os.path.getsize(bundle)
    print("BUNDLE SIZE %d bytes (%.1f MiB)" % (size, size / 2**20))
    assert size <= MAX_BYTES
    where = tmp_path_factory.mktemp("bundle")
    with tarfile.open(bundle) as t:
        names = t.getnames()
        t.extractall(where)
    return where / "tandem-gpu-check", names


def run_check(top, out, budget, steps):
    # A bare environment: nothing of this machine's but the system's paths.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(out.parent), "OUT": str(out),
           "GPU_CHECK_BUDGET": str(budget), "GPU_CHECK_STEPS": steps}
    return subprocess.run(["sh", str(top / "run-gpu-check.sh")], env=env, capture_output=True,
                          text=True, timeout=budget + 60)


def test_bundle_fits_and_runs_here(unpacked, tmp_path):
    top, names = unpacked
    for must in ("run-gpu-check.sh", "MANIFEST", "bin/tandemd", "lib/tandem-cuda.so",
                 "lib/libhwloc.so.15", "lib/libopenblas.so.0", "tests/test_cuda_loader",
                 "bench/bench_overlap", "python/tandem/__init__.py"):
        assert "tandem-gpu-check/" + must in names, must

    out = tmp_path / "out"
    t0 = time.monotonic()
    r = run_check(top, out, BUDGET, STEPS)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (out / "summary.txt").read_text()
    print(summary)
    assert took < BUDGET + 30
    daemon_log = (out / "daemon.log").read_text() if (out / "daemon.log").exists() else ""
    # the plugin stepped aside, and said why
    assert re.search(r"^cuda: .*cudaGetDeviceCount: error 35", summary, re.M), \
        summary + daemon_log
    assert "libraries missing: 0" in summary
    steps = dict(re.findall(r"^step (\S+) (\S+)", summary, re.M))
    for name in STEPS.split():
        assert steps.get(name) == "pass", (name, summary, (out / (name + ".log")).read_text())
    assert steps["llm_layer_cuda_only"] == "skipped"  # not selected
    assert steps["bench_models"] == "skipped"
    assert re.search(r"^step test_cuda_loader pass .* passed=[1-9]\d* failed=0", summary, re.M)
    assert "result: 0 step(s) failed" in summary
    bench = (out / "bench.txt").read_text()
    assert re.search(r"^BENCH copy_gbps [0-9.]+ GB/s device=\S+ dir=h2d", bench, re.M), bench
    assert (out / "machine.txt").exists() and daemon_log


def test_spent_budget_skips_steps(unpacked, tmp_path):
    top, _ = unpacked
    out = tmp_path / "out"
    r = run_check(top, out, 5, "test_cuda_loader")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (out / "summary.txt").read_text()
    assert re.search(r"^step test_cuda_loader skipped .*budget spent", summary, re.M), summary
    assert "result: 0 step(s) failed" in summary
