"""Segment on the host: switch a shaped interface's GSO/TSO off, as cake's `split-gso` does.

With segmentation offload the stack hands the qdisc skbs of up to 64 KB, and HTB lets one
out whenever its bucket is not empty: a shaper at 40 mbit then emits 64 KB bursts at line
rate, each a 13 ms queue at the router beyond the host. That floor of delay sits above a
5 ms target on any uplink under ~100 mbit, so the controller reads its own bursts as a
bottleneck and cuts the link far below it. Measured in the namespace scenario (router
100 -> 40 -> 80 mbit): with offload the shaped link wandered 29-35 mbit under a 40 mbit
bottleneck, without it 38-40; the router's p90 delay fell from 13.6 to 8 ms.

Adapter only (pyroute2's ethtool, netlink and ioctl); it runs where the daemon runs, so
inside a namespace when the daemon is started in one. A device that refuses a feature keeps
it; `split` reports what it actually switched so `restore` puts back exactly that.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SEGMENTATION_FEATURES = ("tx-generic-segmentation", "tx-tcp-segmentation",
                         "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation",
                         "tx-tcp6-segmentation", "tx-tcp-accecn-segmentation")


def _set(ifname: str, names: tuple[str, ...], enable: bool) -> tuple[str, ...]:
    from pyroute2.ethtool import Ethtool

    ethtool = Ethtool()
    try:
        features = ethtool.get_features(ifname)
        changed = tuple(n for n in names if n in features.features
                        and features.features[n].enable != enable)
        for name in changed:
            features.features[name].enable = enable
        if changed:
            ethtool.set_features(ifname, features)
        return changed
    finally:
        ethtool.close()


def split(ifname: str) -> tuple[str, ...]:
    """Switch segmentation offload off on `ifname`; returns the features it turned off.
    Failure is logged and leaves the device as it was: shaping still works, only burstier."""
    try:
        changed = _set(ifname, SEGMENTATION_FEATURES, False)
    except Exception as exc:  # noqa: BLE001 - any driver or ethtool failure: shape anyway
        log.warning("%s: could not switch segmentation offload off (%s); shaping with it on",
                    ifname, exc)
        return ()
    if changed:
        log.info("%s: segmentation offload off (%s) so the shaper sends packets, not bursts",
                 ifname, ", ".join(changed))
    return changed


def restore(ifname: str, features: tuple[str, ...]) -> None:
    """Turn back on what `split` turned off."""
    if not features:
        return
    try:
        _set(ifname, features, True)
    except Exception as exc:  # noqa: BLE001 - the device may be gone at exit
        log.warning("%s: could not restore segmentation offload: %s", ifname, exc)
