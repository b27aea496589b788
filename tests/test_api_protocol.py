import json
import re
from pathlib import Path

import pytest

from qosd.api.errors import ApiError
from qosd.api.protocol import (MAX_REQUEST_BYTES, METHODS, RequestError, encode_error,
                               encode_request, encode_result, parse_reply, parse_request)

GOOD_TELEMETRY = {"job": "j1", "op": "all_reduce", "bytes": 2_000_000, "duration_s": 0.18,
                  "chunk_bytes": 1 << 20, "grant_bps": None, "rank": 0, "step": 3}


def line(doc) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def rejected(raw: bytes) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_request(raw)
    return info.value


def test_parses_request_with_id_and_params():
    req = parse_request(line({"id": 7, "method": "register",
                              "params": {"pid": 42, "class": "compute"}}))
    assert (req.id, req.method, req.params) == (7, "register", {"pid": 42, "class": "compute"})


def test_id_and_params_are_optional():
    req = parse_request(b'{"method": "status"}')
    assert (req.id, req.method, req.params) == (None, "status", {})


def test_string_id_is_echoed():
    assert parse_request(line({"id": "abc", "method": "grants"})).id == "abc"


def test_float_param_accepts_integer_and_nullable_accepts_null():
    req = parse_request(line({"method": "telemetry", "params": {**GOOD_TELEMETRY,
                                                                "duration_s": 1}}))
    assert req.params["duration_s"] == 1 and req.params["grant_bps"] is None


@pytest.mark.parametrize("raw", [b"{nope", b'{"method": "status"', b"\xff\xfe{}", b"NaN",
                                 b'{"method": "telemetry", "params": {"duration_s": NaN}}'])
def test_malformed_json_is_bad_json(raw):
    assert rejected(raw).code == "bad-json"


def test_non_object_is_bad_request():
    err = rejected(b"[1, 2]")
    assert err.code == "bad-request" and "JSON object" in err.message


def test_unknown_method_lists_known_ones():
    err = rejected(line({"id": 3, "method": "reboot"}))
    assert err.code == "unknown-method" and err.request_id == 3
    assert "'reboot'" in err.message and "grants" in err.message


@pytest.mark.parametrize("params, field, words", [
    ({"pid": "42", "class": "compute"}, "params.pid", "expected an integer, got a string"),
    ({"pid": True, "class": "compute"}, "params.pid", "got a boolean"),
    ({"pid": 0, "class": "compute"}, "params.pid", ">= 1"),
    ({"pid": 42}, "params.class", "missing"),
    ({"pid": 42, "class": ""}, "params.class", "empty"),
    ({"pid": 42, "class": "c" * 200}, "params.class", "longer than"),
    ({"pid": 42, "class": "compute", "uid": 0}, "params.uid", "unknown parameter"),
])
def test_wrong_params_name_the_field(params, field, words):
    err = rejected(line({"id": 1, "method": "register", "params": params}))
    assert err.code == "bad-request" and err.request_id == 1
    assert err.message.startswith(field + ":") and words in err.message


def test_non_finite_float_from_overflowing_literal_is_refused():
    raw = json.dumps({"method": "telemetry", "params": GOOD_TELEMETRY}).replace(
        '"duration_s": 0.18', '"duration_s": 1e999').encode()
    err = rejected(raw)
    assert err.code == "bad-request" and "params.duration_s: must be finite" == err.message


@pytest.mark.parametrize("doc, words", [
    ({"method": 5}, "method: expected a string"),
    ({"method": "status", "params": [1]}, "params: expected an object"),
    ({"id": 1.5, "method": "status"}, "id: expected an integer or string"),
    ({"method": "status", "extra": 1}, "extra: unknown key"),
])
def test_envelope_errors(doc, words):
    err = rejected(line(doc))
    assert err.code == "bad-request" and err.message.startswith(words)


def test_size_limit_is_64_kib():
    filler = "x" * (MAX_REQUEST_BYTES - 100)
    fits = parse_request(line({"method": "apply_policy", "params": {"yaml": filler}}))
    assert fits.params["yaml"] == filler
    too_big = line({"method": "apply_policy", "params": {"yaml": "x" * MAX_REQUEST_BYTES}})
    assert rejected(too_big).code == "too-large"


def test_every_documented_method_has_a_schema():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "API.md").read_text()
    table = doc[doc.index("| method |"):].split("\n\n")[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M))
    assert documented >= {"status", "grants", "register", "unregister", "apply_policy",
                          "telemetry", "telemetry_recent", "flows"}
    assert set(METHODS) == documented


def test_result_and_error_roundtrip_through_parse_reply():
    assert parse_reply(encode_result(9, {"ok": True})) == (9, {"ok": True})
    with pytest.raises(ApiError) as info:
        parse_reply(encode_error(9, "policy-invalid", "f.yaml: classes: missing"))
    assert (info.value.code, info.value.message) == ("policy-invalid", "f.yaml: classes: missing")


def test_replies_are_single_lines():
    out = encode_result(1, {"text": "a\nb"})
    assert out.endswith(b"\n") and out.count(b"\n") == 1


def test_unserialisable_result_is_internal_error():
    with pytest.raises(ApiError) as info:
        encode_result(1, {"x": object()})
    assert info.value.code == "internal"
    with pytest.raises(ApiError):
        encode_result(1, {"x": float("nan")})
    with pytest.raises(ApiError):
        encode_result(1, [1, 2])


def test_request_encoding_parses_back():
    req = parse_request(encode_request(4, "register", {"pid": 1, "class": "disk"}))
    assert (req.id, req.params) == (4, {"pid": 1, "class": "disk"})
