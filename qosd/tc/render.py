"""Tc objects and operations spelled for people and for JSON, the way `tc` spells them."""

from __future__ import annotations

from typing import Any, Iterable

from policies.units import format_rate_bps
from qosd.tc.tree import (ROOT_CLASSID, HtbClass, HtbRoot, IngressRedirect, LeafQdisc, Op,
                          TcObject, U32Filter, fmt_handle, fmt_u32_handle)


def _fmt_key(key: Any) -> str:
    return f"{key.value:08x}/{key.mask:08x} at {key.offset_bytes}"


def object_json(obj: TcObject) -> dict[str, Any]:
    """One tc object as JSON: handles spelled like tc, rates and sizes as ints."""
    if isinstance(obj, HtbRoot):
        return {"type": "htb", "handle": fmt_handle(obj.handle),
                "default": fmt_handle(obj.handle | obj.default_minor), "r2q": obj.r2q}
    if isinstance(obj, HtbClass):
        return {"type": "class", "classid": fmt_handle(obj.classid),
                "parent": fmt_handle(obj.parent), "name": obj.name, "rate_bps": obj.rate_bps,
                "ceil_bps": obj.ceil_bps,
                "prio": obj.prio, "quantum_bytes": obj.quantum_bytes}
    if isinstance(obj, LeafQdisc):
        return {"type": obj.kind, "handle": fmt_handle(obj.handle),
                "parent": fmt_handle(obj.parent), "limit_packets": obj.limit_packets}
    if isinstance(obj, U32Filter):
        return {"type": "u32", "parent": fmt_handle(obj.parent), "pref": obj.pref,
                "handle": fmt_u32_handle(obj.handle), "classid": fmt_handle(obj.classid),
                "class": obj.cls, "match": [_fmt_key(k) for k in obj.keys]}
    if isinstance(obj, IngressRedirect):
        return {"type": "mirred", "ifname": obj.ifname, "ifb": obj.ifb_name}
    return {"type": "ifb", "ifname": obj}


def ops_to_json(ops: Iterable[Op]) -> list[dict[str, Any]]:
    out = []
    for op in ops:
        item = {"kind": op.kind, "device": op.device, "object": object_json(op.obj)}
        if op.before is not None:
            item["before"] = object_json(op.before)
        out.append(item)
    return out


def _class_label(cls: HtbClass) -> str:
    if cls.name is not None:
        return f" ({cls.name})"
    return " (link)" if cls.classid == ROOT_CLASSID else ""


def describe(op: Op) -> str:
    """One line for humans: `change-class eth0 905d:11 (disk) rate 30mbit ceil 100mbit`."""
    head, obj = f"{op.kind} {op.device}", op.obj
    if isinstance(obj, HtbRoot):
        return f"{head} {fmt_handle(obj.handle)} htb default {obj.default_minor:x}"
    if isinstance(obj, HtbClass):
        line = (f"{head} {fmt_handle(obj.classid)}{_class_label(obj)} "
                f"rate {format_rate_bps(obj.rate_bps)} ceil {format_rate_bps(obj.ceil_bps)}")
        if op.kind == "add-class":
            line += f" prio {obj.prio} quantum {obj.quantum_bytes} parent {fmt_handle(obj.parent)}"
        elif isinstance(op.before, HtbClass) and op.before.prio != obj.prio:
            line += f" prio {obj.prio}"
        return line
    if isinstance(obj, LeafQdisc):
        return (f"{head} {fmt_handle(obj.handle)} {obj.kind} limit {obj.limit_packets} "
                f"parent {fmt_handle(obj.parent)}")
    if isinstance(obj, U32Filter):
        line = (f"{head} pref {obj.pref} u32 {fmt_u32_handle(obj.handle)} "
                f"flowid {fmt_handle(obj.classid)}{f' ({obj.cls})' if obj.cls else ''}")
        if op.kind == "add-filter":
            line += "".join(f" match {_fmt_key(k)}" for k in obj.keys)
        return line
    if isinstance(obj, IngressRedirect):
        return f"{head} ingress -> {obj.ifb_name}"
    return f"{head} ifb"
