"""A private tandemd for the Python tests (as tests/integration/support.c
starts one for the C tests): $BUILD/bin/tandemd on a socket in a temporary
directory, calibration and models in $BUILD/test-state. The binding under
test is python/tandem with $BUILD/lib/libtandem.so unless TANDEM_LIB says
otherwise."""

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("TANDEM_LIB", os.path.join(BUILD, "lib", "libtandem.so"))


class Daemon:
    """sock: listen there (a restarted daemon in its predecessor's place),
    else in a new temporary directory."""

    def __init__(self, toml="", sock=None):
        self.dir = os.path.dirname(sock) if sock else tempfile.mkdtemp(prefix="tdmpy.")
        self.sock = sock or os.path.join(self.dir, "tandemd.sock")
        self.log = os.path.join(self.dir, "tandemd.log")
        config = os.path.join(self.dir, "tandemd.toml")
        with open(config, "w") as f:
            f.write(toml)
        r, w = os.pipe()
        env = dict(os.environ, XDG_STATE_HOME=os.path.join(BUILD, "test-state"))
        env.pop("STATE_DIRECTORY", None)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [os.path.join(BUILD, "bin", "tandemd"), "--config", config, "--socket",
                 self.sock, "--ready-fd", str(w)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(w,), env=env)
        os.close(w)
        got = b""
        deadline = time.monotonic() + 30
        try:
            while b"READY\n" not in got:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    self.stop()
                    raise RuntimeError("tandemd not ready in 30 s:\n" + self.log_text())
                chunk = os.read(r, 64)
                if not chunk:
                    raise RuntimeError("tandemd exited (%s):\n%s"
                                       % (self.proc.wait(), self.log_text()))
                got += chunk
        finally:
            os.close(r)

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()[-8192:]

    def ctl(self, *args):
        """tandemctl --json ARGS against this daemon, as a document."""
        out = subprocess.run([os.path.join(BUILD, "bin", "tandemctl"), "--socket", self.sock,
                              "--json", *args], check=True, capture_output=True, timeout=10)
        return json.loads(out.stdout)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    yield d
    rc = d.stop()
    if rc != 0:
        print(d.log_text(), file=sys.stderr)
    else:
        shutil.rmtree(d.dir, ignore_errors=True)
    assert rc == 0, "tandemd exited %s at the end" % rc


@pytest.fixture
def client(daemon):
    import tandem

    c = tandem.Client(daemon.sock)
    yield c
    c.close()
    assert daemon.alive(), daemon.log_text()
