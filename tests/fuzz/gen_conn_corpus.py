#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz_conn target (tests/fuzz/corpus/conn/).

    python3 tests/fuzz/gen_conn_corpus.py [DIR]

An input is a list of records: ctl (1 byte), len (2 bytes, little-endian),
then len bytes written on one connection; see tests/fuzz/fuzz_conn.c for
the bits of ctl. The messages are those of include/tandem/wire.h.
Re-running it rewrites the same files; inputs the fuzzer found are kept in
the same directory under other names.
"""
import os
import struct
import sys

MAGIC = 0x54444D31
VERSION = 2
(HELLO, HELLO_REPLY, BUF_ALLOC, BUF_ALLOC_REPLY, BUF_FREE, BUF_FREE_REPLY, KERNEL_LOOKUP,
 KERNEL_REPLY, CTL_STATUS, CTL_REPLY, CTL_MODELS, CTL_CALIBRATE, CTL_TRACE_START,
 CTL_TRACE_STOP, CTL_EXPORT) = range(1, 16)
CLIENT, CONTROL = 1, 2
FIRST_HANDLE = (1 << 20) | 1  # slot 0, generation 1

MEMFD, SEALED, RDONLY, DEVNULL = range(4)


def msg(mtype, payload=b""):
    return struct.pack("<II", mtype, len(payload)) + payload


def hello(role, magic=MAGIC, version=VERSION, flags=0):
    return msg(HELLO, struct.pack("<IIII", magic, version, role, flags))


def alloc(nbytes, flags=0, reserved=0):
    return msg(BUF_ALLOC, struct.pack("<QII", nbytes, flags, reserved))


def free(handle, reserved=0):
    return msg(BUF_FREE, struct.pack("<II", handle, reserved))


def lookup(name):
    return msg(KERNEL_LOOKUP, name.ljust(32, b"\0")[:32])


def ctl(mtype, nfds=None):
    return msg(mtype, b"" if nfds is None else struct.pack("<I", nfds))


def rec(conn, data, nfds=0, kind=MEMFD, close=False, run=True):
    c = conn | nfds << 2 | kind << 4 | (0x40 if close else 0) | (0x80 if run else 0)
    return struct.pack("<BH", c, len(data)) + data


STATUS = ctl(CTL_STATUS)

INPUTS = {
    "client-valid": [
        rec(0, hello(CLIENT)),
        rec(0, alloc(4096)),
        rec(0, free(FIRST_HANDLE)),
        rec(0, lookup(b"axpy")),
        rec(0, STATUS),
    ],
    "control-valid": [
        rec(1, hello(CONTROL)),
        rec(1, STATUS),
        rec(1, ctl(CTL_MODELS)),
        rec(1, ctl(CTL_CALIBRATE)),
        rec(1, ctl(CTL_EXPORT)),
        rec(1, ctl(CTL_EXPORT, 1), nfds=1),
        rec(1, ctl(CTL_TRACE_START, 1), nfds=1),
        rec(1, ctl(CTL_TRACE_STOP)),
        rec(1, ctl(CTL_TRACE_START, 2), nfds=2),
        rec(1, ctl(CTL_TRACE_STOP)),
    ],
    # Everything in one write, read back only at the end.
    "pipelined": [
        rec(0, hello(CLIENT) + alloc(100) + alloc(5000, 1) + free(FIRST_HANDLE)
            + lookup(b"gemm") + STATUS, run=False),
        rec(1, hello(CONTROL) + STATUS + ctl(CTL_MODELS) + ctl(CTL_CALIBRATE) + STATUS,
            run=False),
    ],
    "truncated-header": [rec(0, hello(CLIENT)), rec(0, msg(CTL_STATUS)[:5])],
    "truncated-payload": [rec(0, hello(CLIENT)), rec(0, alloc(4096)[:12], close=True)],
    "oversized-length": [rec(0, hello(CLIENT)), rec(0, struct.pack("<II", CTL_STATUS, 5000))],
    "bad-magic": [rec(0, hello(CLIENT, magic=0x12345678))],
    "wrong-version": [rec(0, hello(CLIENT, version=1)), rec(1, hello(CONTROL, version=3))],
    "hello-flags-role": [rec(0, hello(CLIENT, flags=1)), rec(1, hello(7)),
                         rec(3, msg(HELLO, b"\0" * 12))],
    "hello-twice": [rec(0, hello(CLIENT)), rec(0, hello(CLIENT)), rec(1, hello(CONTROL)),
                    rec(1, hello(CONTROL))],
    "before-hello": [rec(0, STATUS), rec(1, alloc(4096)), rec(2, ctl(CTL_TRACE_START, 1), nfds=1)],
    "control-on-client": [
        rec(0, hello(CLIENT)),
        rec(0, ctl(CTL_CALIBRATE)),
        rec(1, hello(CLIENT)),
        rec(1, ctl(CTL_TRACE_START, 1), nfds=1),
        rec(2, hello(CONTROL)),
        rec(2, alloc(4096)),
    ],
    # Descriptors with requests that take none: kept for a later one.
    "fds-unasked": [
        rec(0, hello(CLIENT), nfds=1),
        rec(0, STATUS, nfds=1),
        rec(0, lookup(b"axpy"), nfds=1),
        rec(1, hello(CONTROL)),
        rec(1, STATUS, nfds=1),
        rec(1, ctl(CTL_TRACE_START, 1)),
        rec(1, ctl(CTL_EXPORT), nfds=2),
        rec(1, ctl(CTL_TRACE_STOP)),
    ],
    "fds-too-many": [
        rec(0, hello(CONTROL), nfds=3),
        rec(1, hello(CONTROL)),
        rec(1, STATUS, nfds=2, run=False),
        rec(1, STATUS, nfds=2),
        rec(2, hello(CONTROL)),
        rec(2, ctl(CTL_TRACE_START, 3), nfds=2),
    ],
    "fds-kinds": [
        rec(1, hello(CONTROL)),
        rec(1, ctl(CTL_TRACE_START, 1), nfds=1, kind=DEVNULL),
        rec(1, ctl(CTL_TRACE_START, 1), nfds=1, kind=RDONLY),
        rec(1, ctl(CTL_TRACE_START, 2), nfds=2, kind=SEALED),
        rec(1, ctl(CTL_TRACE_STOP)),
        rec(1, ctl(CTL_EXPORT, 1), nfds=1, kind=DEVNULL),
        rec(1, ctl(CTL_EXPORT, 2), nfds=2),
        rec(1, ctl(CTL_TRACE_STOP)),
    ],
    # One recording per user; the second connection of the same user is
    # refused; the first goes away without stopping.
    "trace-conflict": [
        rec(0, hello(CONTROL)),
        rec(0, ctl(CTL_TRACE_START, 1), nfds=1),
        rec(1, hello(CONTROL)),
        rec(1, ctl(CTL_TRACE_START, 1), nfds=1),
        rec(2, hello(CONTROL)),
        rec(2, ctl(CTL_TRACE_START, 1), nfds=1),
        rec(0, STATUS, close=True),
        rec(1, ctl(CTL_TRACE_START, 2), nfds=2),
    ],
    "calibrate-gone": [
        rec(1, hello(CONTROL)),
        rec(1, ctl(CTL_CALIBRATE) + STATUS, close=True),
        rec(0, hello(CONTROL)),
        rec(0, ctl(CTL_CALIBRATE), run=False),
        rec(2, hello(CONTROL)),
        rec(2, ctl(CTL_CALIBRATE)),
        rec(0, STATUS),
    ],
    # Connections 2 and 3 are another user's: no models, calibration or
    # export, only their own clients in status, per-uid caps.
    "other-user": [
        rec(0, hello(CLIENT)),
        rec(2, hello(CLIENT)),
        rec(2, alloc(4096)),
        rec(3, hello(CLIENT)),
        rec(3, hello(CONTROL)),
        rec(3, STATUS),
        rec(3, ctl(CTL_MODELS)),
        rec(3, ctl(CTL_CALIBRATE)),
        rec(3, ctl(CTL_EXPORT, 1), nfds=1),
        rec(3, ctl(CTL_TRACE_START, 1), nfds=1),
        rec(3, ctl(CTL_TRACE_STOP)),
    ],
    "buffer-quota": [
        rec(0, hello(CLIENT)),
        rec(0, alloc(0)),
        rec(0, alloc(4096, flags=0x80)),
        rec(0, alloc(4096, reserved=1)),
        rec(0, alloc(1 << 40)),
        rec(0, alloc(0xFFFFFFFFFFFFFFFF)),
        rec(0, alloc(4096) + alloc(4096) + alloc(4096) + alloc(4096) + alloc(4096)),
        rec(0, free(FIRST_HANDLE) + free(FIRST_HANDLE) + free(0) + free(0xFFFFFFFF)
            + free(FIRST_HANDLE + 1, reserved=3)),
        rec(0, alloc(4096) + STATUS),
    ],
    # Two clients and their buffers against the mapping budget (8) and the
    # client cap (2); the fourth connection is over max_connections (3).
    "limits": [
        rec(0, hello(CLIENT) + alloc(4096) * 4),
        rec(1, hello(CLIENT) + alloc(4096) * 4),
        rec(2, hello(CLIENT)),
        rec(2, hello(CONTROL) + STATUS),
        rec(3, hello(CONTROL)),
        rec(0, free(FIRST_HANDLE) + alloc(8192), close=True),
        rec(1, alloc(4096) + STATUS),
    ],
    "lookup": [
        rec(0, hello(CLIENT)),
        rec(0, lookup(b"axpy") + lookup(b"no-such-kernel") + lookup(b"x" * 32)
            + lookup(b"spin") + msg(KERNEL_LOOKUP, b"axpy")),
    ],
    # Many replies at once: they wait in the daemon's output (small send
    # buffer) until the client reads.
    "slow-reader": [
        rec(1, hello(CONTROL)),
        rec(1, STATUS * 40, run=False),
        rec(1, ctl(CTL_MODELS) * 20 + ctl(CTL_EXPORT), run=False),
        rec(0, hello(CLIENT) + alloc(4096) + lookup(b"axpy") * 100),
        rec(1, STATUS),
    ],
    "unknown-types": [
        rec(0, hello(CLIENT)),
        rec(0, msg(HELLO_REPLY, b"\0" * 56)),
        rec(1, hello(CONTROL)),
        rec(1, msg(99)),
        rec(2, hello(CONTROL) + msg(CTL_STATUS, b"x")),
        rec(3, hello(CONTROL) + msg(CTL_TRACE_STOP, b"xxxx")),
    ],
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "conn")
    os.makedirs(out, exist_ok=True)
    for name, records in INPUTS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"".join(records))


if __name__ == "__main__":
    main()
