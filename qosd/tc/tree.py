"""The tc objects qosd manages, as plain values.

Both sides of a reconcile are expressed in these types: the desired tree built from a policy
(`qosd.tc.build`) and the actual tree read back from the kernel (`qosd.tc.kernel`). The planner
(`qosd.tc.plan`) diffs two `DeviceTree`s into `Op`s, and the executor replays `Op`s through
netlink. Keeping both sides in one vocabulary is what makes re-apply a no-op.

Ownership: every qdisc and class qosd creates on a device lives under the major handle
`QOSD_MAJOR`; every filter qosd attaches to a foreign parent (the ingress qdisc's mirred
redirect) uses `QOSD_INGRESS_PREF`; IFB devices qosd creates are named `IFB_PREFIX + ifindex`.
That is all `clear` needs to remove exactly what is ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

QOSD_MAJOR = 0x905D
ROOT_HANDLE = QOSD_MAJOR << 16           # 905d:   the HTB root qdisc
ROOT_CLASSID = ROOT_HANDLE | 1           # 905d:1  the link-rate root class
INGRESS_HANDLE = 0xFFFF0000              # ffff:   the kernel's ingress qdisc
QOSD_INGRESS_PREF = 0x905D               # pref of qosd's mirred redirect on ingress
PROBE_PORT = 29390                       # the UDP port qosd's reflectors answer from: its
                                         # replies pass the IFB tree direct (qosd.measure.probe)
IFB_PREFIX = "qosdi"                     # qosdi<ifindex>, under IFNAMSIZ on any host
FIRST_CLASS_MINOR = 0x10
MAX_CLASS_MINOR = 0xFFFE                 # a class's leaf qdisc is <minor>:, and ffff: is ingress
RESERVED_MINORS = frozenset({QOSD_MAJOR})  # a leaf 905d: would collide with the HTB root


def classid(minor: int) -> int:
    return ROOT_HANDLE | minor


def minor_of(handle: int) -> int:
    return handle & 0xFFFF


def major_of(handle: int) -> int:
    return (handle >> 16) & 0xFFFF


def fmt_handle(handle: int) -> str:
    """tc's `major:minor` spelling, for humans and JSON."""
    return f"{major_of(handle):x}:{minor_of(handle):x}" if minor_of(handle) else f"{major_of(handle):x}:"


def fmt_u32_handle(handle: int) -> str:
    """tc's `htid:bucket:node` spelling of a u32 filter handle, e.g. 800::1."""
    bucket = (handle >> 12) & 0xFF
    return f"{handle >> 20:x}:{f'{bucket:x}' if bucket else ''}:{handle & 0xFFF:x}"


@dataclass(frozen=True)
class HtbRoot:
    handle: int
    default_minor: int
    r2q: int = 10


@dataclass(frozen=True)
class HtbClass:
    classid: int
    parent: int
    rate_bps: int
    ceil_bps: int
    prio: int
    quantum_bytes: int
    name: str | None = None      # the policy class; None for the link root class


@dataclass(frozen=True)
class LeafQdisc:
    """The qdisc under one HTB class: fq_codel where the kernel has it, else a bounded fifo."""

    handle: int
    parent: int
    kind: str
    limit_packets: int


@dataclass(frozen=True)
class U32Key:
    """Compare the 32-bit big-endian word at `offset_bytes` from the network header."""

    value: int
    mask: int
    offset_bytes: int


@dataclass(frozen=True)
class U32Filter:
    parent: int
    pref: int
    handle: int                  # 800:0:node, unique within (parent, pref)
    classid: int
    keys: tuple[U32Key, ...]
    cls: str | None = None       # the policy class, for humans; not part of identity

    @property
    def ident(self) -> tuple[int, int]:
        return (self.pref, self.handle)


@dataclass(frozen=True)
class DeviceTree:
    """One device's qosd-managed HTB tree. `root is None` means nothing of ours is there."""

    ifname: str
    root: HtbRoot | None = None
    classes: Mapping[int, HtbClass] = field(default_factory=dict)       # by classid
    leaves: Mapping[int, LeafQdisc] = field(default_factory=dict)       # by parent classid
    filters: Mapping[tuple[int, int], U32Filter] = field(default_factory=dict)  # by ident


@dataclass(frozen=True)
class IngressRedirect:
    """ingress qdisc on `ifname` + qosd's match-all mirred redirect to the IFB `ifb_name`."""

    ifname: str
    ifb_name: str


@dataclass(frozen=True)
class TcTree:
    """Everything qosd wants on one interface: egress HTB and, optionally, IFB ingress."""

    egress: DeviceTree
    ingress: DeviceTree | None = None
    redirect: IngressRedirect | None = None


OpKind = Literal[
    "add-link", "delete-link",
    "add-qdisc", "change-qdisc", "delete-qdisc",
    "add-class", "change-class", "delete-class",
    "add-filter", "delete-filter",
    "add-redirect", "delete-redirect",
]

TcObject = HtbRoot | HtbClass | LeafQdisc | U32Filter | IngressRedirect | str


@dataclass(frozen=True)
class Op:
    """One netlink operation on `device`. `before` is the object an undo restores.

    `removed_tree` rides along on the ops that take a whole tree down in one call
    (delete-qdisc of the HTB root, delete-link of an IFB) so that an undo can rebuild what
    the kernel removed implicitly. It is not part of the op's identity.
    """

    kind: OpKind
    device: str
    obj: TcObject
    before: TcObject | None = None
    removed_tree: DeviceTree | None = field(default=None, compare=False, repr=False)
