"""Status codes and reject fields as Python enums and exceptions.

Both tables are read from libtandem at import (tdm_error_symbol,
tdm_strerror, tdm_reject_field_symbol, tdm_reject_field_name), so they are
the C library's own and never a copy kept by hand.
"""

import enum

from ._lib import lib


def _walk(symbol):
    out = []
    while True:
        s = symbol(len(out))
        if s is None:
            return out
        out.append(s.decode())


Status = enum.IntEnum("Status", [(s, v) for v, s in enumerate(_walk(lib.tdm_error_symbol))])
Status.__doc__ = "libtandem's status codes (TDM_E*), positive; functions return them negated."
RejectField = enum.IntEnum("RejectField",
                           [(s, v) for v, s in enumerate(_walk(lib.tdm_reject_field_symbol))])
RejectField.__doc__ = "Which field of a rejected graph was wrong (enum tdm_reject_field)."


def strerror(status):
    """What tdm_strerror says of a status (negative or positive)."""
    return lib.tdm_strerror(int(status)).decode()


def reject_field_name(field):
    return lib.tdm_reject_field_name(int(field)).decode()


class Error(Exception):
    """A libtandem call failed.

    status: the negative code the C function returned (-TDM_E*);
    code: the same as a Status (positive); message: tdm_strerror's text;
    where: the call; for a rejected or failed graph, task: the offending
    task's index and field: the RejectField (RejectField.NONE when the
    graph failed while running rather than at intake), field_name its text.
    """

    def __init__(self, status, where="", task=None, field=None):
        self.status = int(status)
        try:
            self.code = Status(abs(self.status))
        except ValueError:
            self.code = abs(self.status)
        self.message = strerror(self.status)
        self.where = where
        self.task = task
        self.field = None
        self.field_name = None
        if field is not None:
            try:
                self.field = RejectField(field)
            except ValueError:
                self.field = int(field)
            self.field_name = reject_field_name(field)
        super().__init__(str(self))

    def __str__(self):
        name = self.code.name if isinstance(self.code, Status) else str(self.code)
        s = "%s%s (%s)" % (self.where + ": " if self.where else "", self.message, name)
        if self.field:
            s += ", task %d, field %s (%s)" % (self.task, self.field_name,
                                                getattr(self.field, "name", self.field))
        return s


class WaitTimeout(Error, TimeoutError):
    """Graph.wait timed out (TDM_ETIMEDOUT); the graph is still running."""


class Disconnected(Error, ConnectionError):
    """The connection to tandemd is dead (TDM_EDISCONNECTED: the daemon
    closed it, or ended where its process cannot be seen): Client.reconnect."""


class DaemonLost(Disconnected):
    """tandemd's process ended (TDM_EDAEMON: killed, crashed, restarted);
    a blocked wait raises it at once. Client.reconnect."""


_CLASSES = {Status.ETIMEDOUT: WaitTimeout, Status.EDISCONNECTED: Disconnected,
            Status.EDAEMON: DaemonLost}


def check(status, where, **detail):
    """Raises the Error for a negative status; returns status otherwise."""
    if status >= 0:
        return status
    raise _CLASSES.get(-status, Error)(status, where, **detail)
