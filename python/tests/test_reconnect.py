"""A lost daemon and coming back: DaemonLost at once, reconnecting with
backoff to the daemon started in its place, and what the old session's
buffers and arrays are afterwards."""

import gc
import os
import shutil
import threading
import time
import weakref

import numpy as np
import pytest

from conftest import Daemon
from test_binding import session, wait_gone

import tandem

# spin 10 s: still running when the daemon is killed (max_task_ms lets it in)
TOML = "[profiler]\ncalibrate = false\n[limits]\nmax_task_ms = 20000\n"


def test_blocked_wait_raises_daemon_lost_then_reconnect_runs_a_graph():
    d = Daemon(TOML)
    d2 = None
    try:
        c = tandem.Client(d.sock)
        x = c.from_array(np.arange(256, dtype=np.float32))
        old = x.array
        old_session = weakref.ref(c._session)
        g = c.graph()
        g.add("spin", [], [10_000_000])
        g.submit()
        killed = []

        def kill():
            killed.append(time.monotonic())
            d.proc.kill()

        t = threading.Timer(0.2, kill)
        t.start()
        with pytest.raises(tandem.DaemonLost) as e:
            g.wait(timeout=30)
        raised = time.monotonic()
        t.join()
        assert e.value.code == tandem.Status.EDAEMON
        assert isinstance(e.value, tandem.Disconnected) and isinstance(e.value, tandem.Error)
        assert raised - killed[0] < 1.0, "DaemonLost %.3f s after the kill" % (raised - killed[0])
        d.proc.wait()
        with pytest.raises(tandem.DaemonLost):  # later calls that need an answer say so too
            c.alloc(16)
        assert old[5] == 5.0  # the mapping is still there

        # reconnect first: the backoff waits for the daemon started after it
        failed = []

        def reconnect():
            try:
                c.reconnect(tandem.Backoff(initial_ms=5, max_ms=50, total_ms=30_000))
            except Exception as ex:  # reported below, in the test's thread
                failed.append(ex)

        r = threading.Thread(target=reconnect)
        r.start()
        d2 = Daemon(TOML, sock=d.sock)
        r.join(40)
        assert not r.is_alive() and not failed, failed

        # nothing of the old session carries over
        assert x.array is None
        with pytest.raises(ValueError, match="lost connection"):
            x.view()
        with pytest.raises(tandem.Error, match="reconnected"):
            g.wait(0)
        ng = c.graph()
        with pytest.raises(ValueError, match="not inside a buffer of this client"):
            ng.add("axpy", [tandem.read(old), tandem.readwrite(c.alloc(256).array)], [1.0])
        # ... but its arrays stay valid memory, and hold the dead session
        assert np.array_equal(old, np.arange(256, dtype=np.float32))
        assert old_session() is not None
        del old, x
        gc.collect()
        assert old_session() is None  # disconnected with its last array

        # the new session works
        a = np.linspace(0, 1, 4096, dtype=np.float32)
        xs = c.from_array(a)
        ys = c.from_array(np.ones(4096, np.float32))
        g2 = c.graph()
        g2.add("axpy", [tandem.read(xs), tandem.readwrite(ys)], [3.0])
        g2.run(timeout=30)
        np.testing.assert_allclose(ys.array, 3.0 * a + 1.0, rtol=1e-6)
        assert c.session_id != 0
        c.close()
        assert d2.alive(), d2.log_text()
    finally:
        d.stop()
        if d2 is not None:
            assert d2.stop() == 0, d2.log_text()
    shutil.rmtree(d.dir, ignore_errors=True)  # kept for a look when the test failed


def test_connect_backoff_gives_up_after_total_ms(tmp_path):
    sock = str(tmp_path / "nobody.sock")
    start = time.monotonic()
    with pytest.raises(tandem.Error) as e:
        tandem.Client.connect_backoff(sock, tandem.Backoff(initial_ms=5, max_ms=20, total_ms=200))
    assert e.value.code == tandem.Status.ECONNECT
    assert e.value.where == "tdm_connect_backoff"
    assert time.monotonic() - start >= 0.2  # it kept trying until total_ms
    assert not os.path.exists(sock)


def test_connect_backoff_and_reconnect_with_a_live_daemon(daemon):
    c = tandem.Client(daemon.sock, backoff=True)
    first = c.session_id
    buf = c.alloc(64)
    c.reconnect()  # the daemon never went away: a new session all the same
    assert c.session_id != first
    assert buf.array is None
    assert session(daemon, c.session_id) is not None
    assert wait_gone(daemon, first)  # the old one ended: no array held it
    c.close()
