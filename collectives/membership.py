"""Tell the local qosd who the job's members are, each time the quorum changes.

torchft knows first when a replica is lost or joins; the daemon probes peers and shapes for
the job, so it should follow the quorum rather than wait for flows to age out. Each replica
learns the members' addresses with one small all-reduce on the fault-tolerant group when the
quorum changes (a slot per participant, its address bytes, SUM), then reports them with the
quorum id as epoch. Reporting never raises into training: no daemon, no report. With a
`RingAgreement` the same quorum change also agrees the members' ring order from measured
latency (`collectives.ring`), re-planned on every membership change.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

import torch
import torch.distributed as dist

from collectives.ring import RingAgreement
from qosd.api.client import ApiClient
from qosd.api.errors import ApiError, ApiUnavailable

log = logging.getLogger(__name__)
SLOT = 17    # 1 byte marker (1 = IPv4, 2 = IPv6) + 16 address bytes


def encode_member(rank: int, participants: int, address: str) -> torch.Tensor:
    """A [participants, SLOT] table, zero but for this replica's row."""
    table = torch.zeros(participants, SLOT, dtype=torch.float32)
    addr = ipaddress.ip_address(address)
    raw = addr.packed
    table[rank, 0] = 1.0 if addr.version == 4 else 2.0
    table[rank, 1:1 + len(raw)] = torch.tensor(list(raw), dtype=torch.float32)
    return table


def decode_members(table: torch.Tensor) -> list[str | None]:
    """Each row's address after the SUM; None for a row nobody filled (a healer's zeros)."""
    out: list[str | None] = []
    for row in table.round().to(torch.int64).tolist():
        if row[0] == 1:
            out.append(str(ipaddress.IPv4Address(bytes(row[1:5]))))
        elif row[0] == 2:
            out.append(str(ipaddress.IPv6Address(bytes(row[1:17]))))
        else:
            out.append(None)
    return out


def local_address(toward_host: str) -> str:
    """The address this host uses to reach `toward_host` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in toward_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((toward_host, 9))
        return sock.getsockname()[0]


class MembershipReporter:
    """Reports the job's members (`job_members`) when the quorum id moves.

    Every replica must call `on_quorum` whether or not it has a daemon to tell (`client`
    None): the all-reduce inside is a collective, and one replica skipping it would leave the
    others waiting on it."""

    def __init__(self, job: str, address: str, client: ApiClient | None,
                 ring: RingAgreement | None = None) -> None:
        self.job = job
        self.address = address
        self.client = client
        self.ring = ring
        self.quorum_id: int | None = None
        self.reported: list[dict[str, str]] | None = None

    def on_quorum(self, manager, quorum_id: int) -> None:
        """Call after `start_quorum()`; one tiny all-reduce when the quorum changed."""
        if quorum_id == self.quorum_id:
            return
        self.quorum_id = quorum_id
        rank, n = manager.participating_rank(), manager.num_participants()
        if rank is None or n < 1:
            return
        table = encode_member(rank, n, self.address)
        manager.allreduce(table, reduce_op=dist.ReduceOp.SUM).wait()
        if manager.errored() is not None:
            return
        members = [{"name": f"replica{i}", "address": a} for i, a in enumerate(decode_members(table)) if a]
        self.report(members, quorum_id)
        if self.ring is not None and len(members) == n:
            self.ring.agree(manager, rank, [(m["name"], m["address"]) for m in members])

    def report(self, members: list[dict[str, str]], epoch: int) -> None:
        if self.client is None:
            return
        try:
            self.client.call("job_members", {"job": self.job, "members": members, "epoch": epoch})
            self.reported = members
        except (ApiError, ApiUnavailable) as exc:
            log.debug("job_members not reported: %s", exc)
