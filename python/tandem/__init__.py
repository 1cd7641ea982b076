"""tandem: a Python binding of libtandem, the client library of tandemd.

    import numpy as np, tandem
    with tandem.Client() as c:                      # $TANDEM_SOCKET or the default
        x = c.from_array(np.ones(1024, np.float32))
        y = c.alloc(1024)                            # float32, zeroed; y.array is a view
        g = c.graph(task_info=True)
        g.add("axpy", [tandem.read(x.array), tandem.readwrite(y.array)], [2.0])
        g.run(timeout=5.0)
        print(y.array[:4], g.task_info(0).device)

libtandem is found through $TANDEM_LIB, else the installed libtandem.so.1,
else libtandem.so. Errors are tandem.Error (status, code, task, field);
tandem.WaitTimeout when a wait times out; tandem.DaemonLost (a
tandem.Disconnected) when tandemd's process ended: Client.reconnect().
Growable KV buffers: Client.reserve, Buffer.grow, Client.kv_admit.
"""

from ._lib import lib as _c
from .client import (ACC, KV, R, RW, SCRATCH, W, WEIGHTS, Arg, Backoff, Buffer, Client, Graph,
                     Kernel, KVAdmission, Policy, TaskInfo, Tier, accumulate, f32, f64, i64, read,
                     readwrite, write)
from .errors import (DaemonLost, Disconnected, Error, RejectField, Status, WaitTimeout,
                     reject_field_name, strerror)

__all__ = [
    "ACC", "Arg", "Backoff", "Buffer", "Client", "DaemonLost", "Disconnected", "Error", "Graph",
    "KV", "KVAdmission", "Kernel", "Policy", "R", "RW", "RejectField", "SCRATCH", "Status",
    "TaskInfo", "Tier", "W", "WEIGHTS", "WaitTimeout", "accumulate", "f32", "f64", "i64",
    "library_version", "read", "readwrite", "reject_field_name", "strerror", "write",
]


def library_version():
    """The loaded libtandem's version (tdm_version: TDM_VERSION_STRING as it
    was built)."""
    return _c.tdm_version().decode()


# The binding is part of libtandem's source tree and released with it: one version.
__version__ = library_version()
