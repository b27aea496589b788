"""Property-based fuzz of the local API: generated lines into a real server, every reply checked.

The server is the real `ApiServer` with the real `Handlers`, over a published snapshot and a
write side that records calls (no kernel). Hypothesis generates batches of lines: valid
requests, requests with wrong or extra fields, arbitrary JSON, truncated JSON, raw bytes.
Each batch is sent pipelined on one connection. The property: the server never dies, and
every non-blank line gets exactly one reply that is a JSON object with `id` and exactly one
of `result` (an object) or `error` (a known code and a one-line message), with the request's
id echoed whenever the request had a readable one.

`make test` runs a few thousand lines (tests/test_api_fuzz.py); `make bench` many more.
"""

from __future__ import annotations

import json
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosd.api.errors import ERROR_CODES, POLICY_INVALID
from qosd.api.protocol import MAX_REQUEST_BYTES, METHODS
from qosd.api.testing import BackgroundApiServer
from qosd.daemon.handlers import Handlers
from qosd.telemetry import TelemetryStore
from qosd.daemon.testing import RecordingControl, snapshot

PARAM_NAMES = sorted({name for schema in METHODS.values() for name in schema})
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)
PARAMS = st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=6), JSON, max_size=5)
REQUEST = st.fixed_dictionaries(
    {"method": st.sampled_from(sorted(METHODS)) | st.text(max_size=12)},
    optional={"id": st.integers() | st.text(max_size=8) | JSON, "params": PARAMS | JSON,
              "extra": JSON})


VALID = st.one_of(
    st.fixed_dictionaries({"method": st.sampled_from(["status", "grants", "flows"])}),
    st.fixed_dictionaries({"method": st.just("register"), "params": st.fixed_dictionaries(
        {"pid": st.integers(1, 4_194_304), "class": st.sampled_from(["compute", "disk", "x"])})}),
    st.fixed_dictionaries({"method": st.just("telemetry_recent"), "params": st.fixed_dictionaries(
        {}, optional={"limit": st.integers(1, 10**6)})}),
).flatmap(lambda req: st.integers(0, 2**53).map(lambda rid: {**req, "id": rid}))


def _line(value: object) -> bytes:
    return json.dumps(value).encode()


LINE = st.one_of(
    VALID.map(_line),
    REQUEST.map(_line),
    REQUEST.map(_line).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
    JSON.map(_line),
    st.binary(max_size=200),
    st.just(b'{"method": "status", "params": {"x": NaN}}'),
).map(lambda b: b.replace(b"\n", b" ")[:MAX_REQUEST_BYTES])


@dataclass
class FuzzResult:
    lines: int = 0
    replies: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)


def _expected_id(line: bytes) -> object:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if isinstance(doc, dict) and not isinstance(doc.get("id"), bool) \
            and isinstance(doc.get("id"), (int, str)):
        return doc["id"]
    return None


def check_reply(line: bytes, reply: bytes) -> str | None:
    """What is wrong with `reply` to `line`, or None."""
    try:
        doc = json.loads(reply)
    except ValueError:
        return f"reply is not JSON: {reply[:200]!r}"
    if not isinstance(doc, dict) or set(doc) not in ({"id", "result"}, {"id", "error"}):
        return f"reply keys {sorted(doc) if isinstance(doc, dict) else type(doc)}"
    if "result" in doc and not isinstance(doc["result"], dict):
        return "result is not an object"
    if "error" in doc:
        err = doc["error"]
        if not isinstance(err, dict) or err.get("code") not in ERROR_CODES \
                or not isinstance(err.get("message"), str) or "Traceback" in err["message"]:
            return f"malformed error {err!r:.200}"
        if "\n" in err["message"] and err["code"] != POLICY_INVALID:   # one line per problem
            return f"multi-line error {err!r:.200}"
    want = _expected_id(line)
    if want is not None and doc["id"] != want:
        return f"id {doc['id']!r} for a request with id {want!r}"
    return None


def _exchange(path: str, lines: list[bytes]) -> list[bytes]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"".join(line + b"\n" for line in lines))
        want = sum(1 for line in lines if line.strip())
        reader = sock.makefile("rb")
        return [reader.readline() for _ in range(want)]


def fuzz(examples: int, batch: int = 30) -> FuzzResult:
    result = FuzzResult()
    control = RecordingControl()
    handlers = Handlers(snapshot, control, TelemetryStore(), owner_of=lambda pid: 0)
    with tempfile.TemporaryDirectory(prefix="qosd-fuzz-") as tmp:
        path = str(Path(tmp) / "api.sock")
        with BackgroundApiServer(path, handlers.table(), first_request_timeout_s=10):

            @settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(st.lists(LINE, min_size=batch // 2, max_size=batch))
            def one_batch(lines: list[bytes]) -> None:
                replies = _exchange(path, lines)
                result.lines += len(lines)
                spoken = [line for line in lines if line.strip()]
                for line, reply in zip(spoken, replies):
                    result.replies += 1
                    result.errors += b'"error"' in reply
                    problem = check_reply(line, reply)
                    if problem is not None:
                        result.problems.append(f"{line[:120]!r}: {problem}")

            one_batch()
            result.problems += [] if _alive(path) else ["server stopped answering"]
    return result


def _alive(path: str) -> bool:
    (reply,) = _exchange(path, [b'{"id": 1, "method": "status"}'])
    return json.loads(reply).get("result", {}).get("interface") == "eth0"
