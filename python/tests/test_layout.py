"""The ctypes mirror of tandem.h (python/tandem/_lib.py) against the C
compiler's view of the same headers: every size, offset and constant."""

import ctypes
import os
import shutil
import subprocess

import pytest

from conftest import ROOT
import tandem
from tandem import _lib

STRUCTS = {
    "tdm_connect_opts": (_lib.ConnectOpts, ["socket_path", "spin_us", "daemon_uid"]),
    "tdm_arg": (_lib.Arg, ["buffer", "mode", "offset", "length"]),
    "tdm_scalar": (_lib.Scalar, ["type", "v"]),
    "tdm_task_desc": (_lib.TaskDesc, ["kernel", "nargs", "args", "nscalars", "scalars",
                                      "priority"]),
    "tdm_task_info": (_lib.TaskInfo, ["status", "device", "queued_ns", "start_ns", "end_ns",
                                      "predicted_ns", "predicted_spread_ns"]),
    "tdm_backoff": (_lib.Backoff, ["initial_ms", "max_ms", "total_ms"]),
    "tdm_kv_admission": (_lib.KVAdmission, ["bytes_per_token", "context_tokens",
                                            "max_new_tokens", "tier", "predicted_new_tokens",
                                            "history", "peak_bytes", "device_free_bytes",
                                            "host_free_bytes"]),
}
CONSTANTS = {
    "TDM_MAX_ARGS": _lib.MAX_ARGS, "TDM_MAX_SCALARS": _lib.MAX_SCALARS,
    "TDM_R": _lib.ACCESS_R, "TDM_W": _lib.ACCESS_W, "TDM_RW": _lib.ACCESS_RW,
    "TDM_SCALAR_I64": _lib.SCALAR_I64, "TDM_SCALAR_F64": _lib.SCALAR_F64,
    "TDM_SCALAR_F32": _lib.SCALAR_F32,
    "TDM_BUF_WEIGHTS": _lib.BUF_WEIGHTS, "TDM_BUF_KV": _lib.BUF_KV,
    "TDM_BUF_SCRATCH": _lib.BUF_SCRATCH, "TDM_POLICY_HINT_COUNT": len(_lib.POLICY_HINTS),
    "TDM_TIER_ANY": _lib.TIER_ANY, "TDM_TIER_DEVICE": _lib.TIER_DEVICE,
    "TDM_TIER_HOST": _lib.TIER_HOST,
}
CONSTANTS.update({"TDM_POLICY_" + n: v for v, n in enumerate(_lib.POLICY_HINTS)})


def c_layout(tmp_path):
    """name -> value as a C program built against include/ prints them."""
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "tandem.h"', "int main(void){"]
    for s, (_, fields) in STRUCTS.items():
        lines.append('printf("sizeof %s %%zu\\n", sizeof(struct %s));' % (s, s))
        for f in fields:
            lines.append('printf("%s.%s %%zu\\n", offsetof(struct %s, %s));' % (s, f, s, f))
    for name in CONSTANTS:
        lines.append('printf("%s %%lld\\n", (long long)(%s));' % (name, name))
    lines.append('printf("TDM_VERSION_STRING %s\\n", TDM_VERSION_STRING);')
    lines.append("return 0;}")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-std=c11", "-I" + os.path.join(ROOT, "include"), str(src), "-o",
                    str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict((k, v if k == "TDM_VERSION_STRING" else int(v))
                for k, v in (ln.rsplit(" ", 1) for ln in out.splitlines()))


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_structs_and_constants_match_the_headers(tmp_path):
    c = c_layout(tmp_path)
    for s, (cls, fields) in STRUCTS.items():
        assert ctypes.sizeof(cls) == c["sizeof " + s], s
        assert [f[0] for f in cls._fields_] == fields, s
        for f in fields:
            assert getattr(cls, f).offset == c["%s.%s" % (s, f)], (s, f)
    for name, value in CONSTANTS.items():
        assert value == c[name], name
    # the library built from these headers says the same version
    assert tandem.library_version() == c["TDM_VERSION_STRING"]
