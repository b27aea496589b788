"""Collectives that fit the network qosd grants: a DDP comm hook, chunked and hierarchical
all-reduce over torch.distributed. Works without the daemon, from its own measurements."""

from collectives.chunked import ChunkedReduceError, chunked_all_reduce
from collectives.grant import (
    ChainedGrantSource,
    DaemonGrantSource,
    FixedGrantSource,
    Grant,
    GrantSource,
    MeasuredGrantSource,
)
from collectives.hierarchical import HierarchyGroups, hierarchical_all_reduce
from collectives.hook import AdaptiveState, adaptive_allreduce_hook
from collectives.planner import ChunkLimits, ChunkPlan, InvalidChunkLimits, Replanner, plan_chunks
from collectives.telemetry import CollectiveRecord, RecordingSink, TelemetrySink
from collectives.topology import Topology, TopologyError, cluster_sites, ring_order

__all__ = [
    "AdaptiveState",
    "ChainedGrantSource",
    "ChunkLimits",
    "ChunkPlan",
    "ChunkedReduceError",
    "CollectiveRecord",
    "DaemonGrantSource",
    "FixedGrantSource",
    "Grant",
    "GrantSource",
    "HierarchyGroups",
    "InvalidChunkLimits",
    "MeasuredGrantSource",
    "RecordingSink",
    "Replanner",
    "TelemetrySink",
    "Topology",
    "TopologyError",
    "adaptive_allreduce_hook",
    "chunked_all_reduce",
    "cluster_sites",
    "hierarchical_all_reduce",
    "plan_chunks",
    "ring_order",
]
