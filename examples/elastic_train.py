"""Elastic data-parallel training on torchft that survives peers dying and coming back.

Launch as torchft documents (one lighthouse, then one process per replica group):

    torchft_lighthouse --min_replicas 1 --quorum_tick_ms 100 --join_timeout_ms 10000 \\
        --heartbeat_timeout_ms 1000 --bind [::]:29510 &
    for g in 0 1 2; do
      TORCHFT_LIGHTHOUSE=http://localhost:29510 REPLICA_GROUP_ID=$g MASTER_ADDR=localhost \\
      MASTER_PORT=$((29600 + g)) RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 \\
      python examples/elastic_train.py --steps 200 --out /tmp/replica$g.json &
    done

Every step: a quorum with the lighthouse (a replica behind the others heals there, from a live
peer: model, optimizer, step and with it the data position), forward/backward on this
replica's slice of the step's global batch, the gradients averaged by the project's grant-
adaptive chunked all-reduce on torchft's fault-tolerant process group, then the optimizer
steps only if torchft says the step may commit. A peer lost mid-step makes the survivors
discard that step (nothing half-reduced is ever applied) and go on with those left; the next
quorum reweights the average over them.

Ending: a replica leaves once a quorum shows the job at `--steps` (or at the step a stop was
agreed at: `--stop-file` appearing on any replica is voted along with the grants, and the
step to stop at travels with the healed state). A replica that discarded
the last step while another committed it is in that same quorum, behind, and heals to the
committed state first, so all that finish write the same `param_sha256`. That needs the
lighthouse's join timeout (10 s) above the collective timeout (`--timeout-s`, 3 s): a replica
still waiting out a dead peer is then waited for instead of left to train on alone.
"""

from __future__ import annotations

import time

IMPORTS_STARTED_S = time.time()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import urllib.parse  # noqa: E402
from datetime import timedelta  # noqa: E402

import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401  (the first optimizer imports it anyway: 2-5 s of CPU here)
from torch.distributed import TCPStore  # noqa: E402
from torchft import Manager, ProcessGroupGloo  # noqa: E402

from collectives.elastic import ElasticReducer, reduce_gradients  # noqa: E402
from collectives.grant import ChainedGrantSource, DaemonGrantSource, MeasuredGrantSource  # noqa: E402
from collectives.membership import MembershipReporter, local_address  # noqa: E402
from collectives.ring import LatencySource, RingAgreement  # noqa: E402
from qosd.api.client import ApiClient, default_socket_path  # noqa: E402

IMPORTS_DONE_S = time.time()
FEATURES = 32
GLOBAL_BATCH = 96


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))


def batch(seed: int, step: int, rank: int, participants: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This replica's slice of step `step`'s global batch: the data position is the step."""
    target = torch.Generator().manual_seed(seed)
    w_true = torch.randn(FEATURES, 1, generator=target)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    x = torch.randn(GLOBAL_BATCH, FEATURES, generator=gen)
    y = torch.tanh(x @ w_true) + 0.01 * torch.randn(GLOBAL_BATCH, 1, generator=gen)
    return x[rank::participants], y[rank::participants]


def param_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Events:
    """JSON lines (`--events`): what the tests and benches time kills and heals by."""

    def __init__(self, path: str | None, replica: str) -> None:
        self._file = open(path, "a", buffering=1) if path else None
        self._replica = replica

    def emit(self, event: str, **fields) -> None:
        if self._file:
            self._file.write(json.dumps({"t": time.time(), "event": event, "replica": self._replica, **fields}) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, required=True, help="train until this many steps are committed")
    parser.add_argument("--out", required=True, help="write the result JSON here")
    parser.add_argument("--events", help="append one JSON line per step/heal here")
    parser.add_argument("--step-ms", type=float, default=0.0, help="extra compute per step (stand-in for a bigger model)")
    parser.add_argument("--stop-file", help="when this file exists, the job stops together at the next step")
    parser.add_argument("--job", default="elastic_train", help="job name reported to the local qosd")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=3.0, help="collective and heal timeout: how long a survivor waits on a silent peer")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        group = os.environ["REPLICA_GROUP_ID"]
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        store_addr, store_port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        os.environ["TORCHFT_LIGHTHOUSE"]
    except (KeyError, ValueError) as exc:
        print(f"elastic_train: environment: {exc} missing or bad (see --help)", file=sys.stderr)
        return 2
    if world != 1:
        print("elastic_train: this example runs one process per replica group (WORLD_SIZE=1)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    events = Events(args.events, group)
    events.emit("imported", imports_s=IMPORTS_DONE_S - IMPORTS_STARTED_S)
    store = TCPStore(store_addr, store_port, is_master=(rank == 0), wait_for_workers=False)  # noqa: F841

    model = make_model(args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    recoveries = 0
    stop_at = [args.steps]    # lowered by an agreed stop; part of the healed state

    def load_state_dict(state: dict) -> None:
        nonlocal recoveries
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        stop_at[0] = min(stop_at[0], int(state["stop_at"]))
        recoveries += 1
        events.emit("healed")

    timeout = timedelta(seconds=args.timeout_s)
    manager = Manager(
        pg=ProcessGroupGloo(timeout=timeout),
        load_state_dict=load_state_dict,
        state_dict=lambda: {"model": model.state_dict(), "optim": optimizer.state_dict(), "stop_at": stop_at[0]},
        min_replica_size=1,
        use_async_quorum=False,     # heal before the step, so a healed replica takes part at once
        timeout=timeout,
        quorum_timeout=timedelta(seconds=30),   # the lighthouse, not a peer, bounds this
        connect_timeout=timeout,
        replica_id=f"elastic_train_{group}",
    )
    events.emit("manager_ready")
    grants = ChainedGrantSource(DaemonGrantSource(), MeasuredGrantSource())
    reducer = ElasticReducer(manager, grants, job="elastic_train")
    params = list(model.parameters())
    lighthouse_host = urllib.parse.urlsplit(os.environ["TORCHFT_LIGHTHOUSE"]).hostname or "127.0.0.1"
    daemon = ApiClient(timeout_s=0.2) if os.path.exists(default_socket_path()) else None   # a local qosd follows the job
    ring = RingAgreement(LatencySource(daemon))     # the members' ring, from measured latency
    reporter = MembershipReporter(args.job, local_address(lighthouse_host), daemon, ring=ring)
    loss_value = float("nan")
    first_quorum = True
    try:
        while True:
            manager.start_quorum()
            step = manager.current_step()
            # torchft 0.2.0 has no public quorum id; the attribute is read, never written
            replans = ring.planner.replans
            reporter.on_quorum(manager, getattr(manager, "_quorum_id", -1))
            if ring.planner.replans != replans:
                events.emit("ring", order=list(ring.order), sources=dict(ring.source.sources))
            if first_quorum:
                events.emit("first_quorum", step=step)
                first_quorum = False
            if step >= stop_at[0]:
                break
            participants = manager.num_participants()
            x, y = batch(args.seed, step, manager.participating_rank() or 0, participants)
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            if args.step_ms:
                time.sleep(args.step_ms / 1e3)
            vote = 1.0 if args.stop_file and os.path.exists(args.stop_file) else 0.0
            agreed = reduce_gradients(reducer, params, step=step, vote=vote)
            if agreed > 0 and manager.errored() is None:
                stop_at[0] = min(stop_at[0], step + 1)
            if manager.should_commit():
                optimizer.step()
                loss_value = float(loss)
                events.emit("commit", step=step + 1, participants=participants, loss=loss_value)
            else:
                events.emit("discard", step=step, participants=participants)
    finally:
        grants.close()
    result = {"steps": manager.current_step(), "param_sha256": param_sha256(model),
              "recoveries": recoveries, "loss": loss_value, "replica": group,
              "batches_committed": manager.batches_committed(),
              "ring": list(ring.order), "ring_replans": ring.planner.replans}
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    events.emit("done", **result)
    manager.shutdown(wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
