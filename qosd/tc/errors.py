"""What the kernel refused, said the same way wherever tc talks to it.

The socket (`qosd.tc.batch`), the kernel interface (`qosd.tc.kernel`) and its netlink
implementation (`qosd.tc.netlink`) all report refusals; keeping the wording and the error
type here, below all three, is what lets them import each other in one direction only.
"""

from __future__ import annotations

import errno as errno_names
import os
from typing import Sequence

from qosd.errors import NetlinkError
from qosd.tc.tree import (HtbClass, HtbRoot, IngressRedirect, LeafQdisc, Op, U32Filter,
                          fmt_handle, fmt_u32_handle)


def strerror(code: int) -> str:
    """`Invalid argument (EINVAL)`: the text and the name, as people search for either."""
    return f"{os.strerror(code)} ({errno_names.errorcode.get(code, str(code))})"


def op_label(op: Op) -> str:
    """`add-class eth0 905d:12`: which op, short enough for an error line."""
    obj = op.obj
    if isinstance(obj, U32Filter):
        what = f"pref {obj.pref} {fmt_u32_handle(obj.handle)}"
    elif isinstance(obj, IngressRedirect):
        what = f"-> {obj.ifb_name}"
    elif isinstance(obj, HtbClass):
        what = fmt_handle(obj.classid)
    elif isinstance(obj, HtbRoot):
        what = f"htb {fmt_handle(obj.handle)} root"
    elif isinstance(obj, LeafQdisc):
        what = f"{obj.kind} {fmt_handle(obj.handle)} parent {fmt_handle(obj.parent)}"
    else:
        what = obj
    return f"{op.kind} {op.device} {what}"


class OpFailed(NetlinkError):
    """The kernel refused `op`; `applied` are the ops of the same call that it did apply."""

    def __init__(self, op: Op, code: int, reason: str = "", applied: Sequence[Op] = ()) -> None:
        self.op, self.errno, self.reason, self.applied = op, code, reason, list(applied)
        line = f"{op_label(op)}: {strerror(code)}"
        super().__init__(line + (f": {reason}" if reason else ""))
