"""make install-python puts the package where Debian's python3 finds it for
the prefix, and it imports from there; make uninstall-python removes it."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def make(*args):
    return subprocess.run(["make", "-s", "-C", ROOT, *args], env=MAKE_ENV, check=True,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("prefix", ["/usr", "/usr/local"])
def test_install_and_uninstall(tmp_path, prefix):
    dest = str(tmp_path / "root")
    make("install-python", "DESTDIR=" + dest, "PREFIX=" + prefix)
    found = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
    assert any(p.endswith("/tandem/__init__.py") for p in found), found
    site = os.path.dirname(os.path.dirname(next(p for p in found if p.endswith("__init__.py"))))
    assert site.startswith(dest + prefix + "/lib/python3")
    # the directory is one the system's python3 searches for this prefix
    searched = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path))"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout)
    assert site[len(dest):] in searched, (site, searched)
    env = dict(os.environ, PYTHONPATH=site)
    r = subprocess.run([sys.executable, "-c", "import tandem; print(tandem.__file__); "
                        "print(tandem.Status.EKERNEL.name)"], env=env, capture_output=True,
                       text=True, cwd=str(tmp_path), timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(site), r.stdout
    assert "EKERNEL" in r.stdout
    make("uninstall-python", "DESTDIR=" + dest, "PREFIX=" + prefix)
    assert not os.path.exists(os.path.join(site, "tandem"))
