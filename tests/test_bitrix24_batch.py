"""``batch`` encoding and decoding (reference §3.3) and the error taxonomy (§1.3)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from callbridge.crm.base import ErrorKind
from callbridge.crm.bitrix24.batch import (
    BatchCommand,
    BatchRef,
    decode_batch,
    encode_batch,
    php_query,
)
from callbridge.crm.bitrix24.client import is_idempotent
from callbridge.crm.bitrix24.errors import Bitrix24Error, error_from_envelope, map_error


def test_php_query_nests_like_http_build_query() -> None:
    q = php_query(
        {
            "fields": {
                "TITLE": "Call & more",
                "PHONE": [{"VALUE": "+7 900", "VALUE_TYPE": "WORK"}],
            },
            "SHOW": True,
            "ADD_TO_CHAT": False,
            "skip": None,
            "USER_ID": [1, 2],
        }
    )
    assert parse_qsl(q) == [
        ("fields[TITLE]", "Call & more"),
        ("fields[PHONE][0][VALUE]", "+7 900"),
        ("fields[PHONE][0][VALUE_TYPE]", "WORK"),
        ("SHOW", "1"),
        ("ADD_TO_CHAT", "0"),
        ("USER_ID[0]", "1"),
        ("USER_ID[1]", "2"),
    ]


def test_result_reference_is_written_raw() -> None:
    q = php_query({"CALL_ID": BatchRef("c0", ("CALL_ID",)), "X": BatchRef("u", (0, "ID"))})
    assert q == "CALL_ID=$result[c0][CALL_ID]&X=$result[u][0][ID]"
    # and it survives the portal parsing the query
    assert dict(parse_qsl(q))["CALL_ID"] == "$result[c0][CALL_ID]"


def test_encode_batch_shape_and_limits() -> None:
    cmds = [
        BatchCommand("r", "telephony.externalcall.register", {"USER_ID": 1, "TYPE": 2}),
        BatchCommand(
            "f", "telephony.externalcall.finish", {"CALL_ID": BatchRef("r", ("CALL_ID",))}
        ),
        BatchCommand("u", "user.current"),
    ]
    assert encode_batch(cmds) == {
        "halt": 0,
        "cmd": {
            "r": "telephony.externalcall.register?USER_ID=1&TYPE=2",
            "f": "telephony.externalcall.finish?CALL_ID=$result[r][CALL_ID]",
            "u": "user.current",
        },
    }
    assert encode_batch(cmds[:1], halt=True)["halt"] == 1
    with pytest.raises(Bitrix24Error) as too_many:
        encode_batch([BatchCommand(f"c{i}", "user.current") for i in range(51)])
    assert too_many.value.code == "ERROR_BATCH_LENGTH_EXCEEDED"
    assert too_many.value.kind is ErrorKind.VALIDATION
    with pytest.raises(Bitrix24Error) as nested:
        encode_batch([BatchCommand("b", "batch")])
    assert nested.value.code == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    with pytest.raises(ValueError, match="duplicate"):
        encode_batch([BatchCommand("a", "x.y"), BatchCommand("a", "x.z")])
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([])


def test_decode_keeps_per_command_errors_apart() -> None:
    cmds = [
        BatchCommand("a", "user.current"),
        BatchCommand("b", "crm.lead.list"),
        BatchCommand("c", "telephony.externalcall.finish"),
        BatchCommand("d", "crm.lead.add"),
    ]
    body = {
        "result": {"a": {"ID": "1"}, "b": [{"ID": "5"}]},
        "result_error": {
            "c": {
                "error": "",
                "error_description": "Call is not found (call should be registered prior to "
                "finishing",
            },
            "d": {"error": "insufficient_scope", "error_description": ""},
        },
        "result_total": {"b": 120},
        "result_next": {"b": 50},
        "result_time": {"a": {"operating": 0.2, "operating_reset_at": 100}},
    }
    out = decode_batch(body, cmds)
    assert out.results == {"a": {"ID": "1"}, "b": [{"ID": "5"}]}
    assert set(out.errors) == {"c", "d"}
    assert out.errors["c"].kind is ErrorKind.PERMANENT
    assert out.errors["c"].method == "telephony.externalcall.finish"
    assert out.errors["d"].kind is ErrorKind.AUTH
    assert out.totals == {"b": 120}
    assert out.nexts == {"b": 50}
    assert out.times["a"]["operating"] == 0.2


def test_decode_php_empty_maps_and_list_form() -> None:
    cmds = [BatchCommand("a", "x.get"), BatchCommand("b", "y.get")]
    out = decode_batch(
        {"result": [1, 2], "result_error": [], "result_total": [], "result_next": []}, cmds
    )
    assert out.results == {"a": 1, "b": 2}
    assert out.errors == {}
    halted = decode_batch({"result": {"a": 1}, "result_error": []}, cmds)
    assert "b" not in halted.results and "b" not in halted.errors
    with pytest.raises(Bitrix24Error):
        decode_batch(None, cmds)


@pytest.mark.parametrize(
    ("status", "code", "description", "kind"),
    [
        (503, "QUERY_LIMIT_EXCEEDED", "Too many requests", ErrorKind.RETRYABLE),
        (429, "QUERY_LIMIT_EXCEEDED", "Too many requests", ErrorKind.RETRYABLE),
        (429, "OPERATION_TIME_LIMIT", "Method is blocked", ErrorKind.RETRYABLE),
        (503, "OVERLOAD_LIMIT", "", ErrorKind.RETRYABLE),
        (500, "INTERNAL_SERVER_ERROR", "", ErrorKind.RETRYABLE),
        (401, "expired_token", "The access token provided has expired.", ErrorKind.AUTH),
        (401, "invalid_token", "", ErrorKind.AUTH),
        (401, "NO_AUTH_FOUND", "Wrong authorization data", ErrorKind.AUTH),
        (401, "PAYMENT_REQUIRED", "", ErrorKind.AUTH),
        (403, "insufficient_scope", "", ErrorKind.AUTH),
        (403, "WRONG_AUTH_TYPE", "", ErrorKind.AUTH),
        (403, "ACCESS_DENIED", "", ErrorKind.PERMANENT),
        (404, "ERROR_METHOD_NOT_FOUND", "Method not found!", ErrorKind.PERMANENT),
        (400, "ERROR_BATCH_LENGTH_EXCEEDED", "", ErrorKind.VALIDATION),
        (405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "", ErrorKind.VALIDATION),
        (400, "INVALID_ARGUMENT", "CALL_ID must be a string", ErrorKind.VALIDATION),
        (400, "", "USER_ID or USER_PHONE_INNER should be set", ErrorKind.VALIDATION),
        (400, "ERROR_CORE", "Unknown TYPE", ErrorKind.VALIDATION),
        (
            400,
            "",
            "Call is not found (call should be registered prior to finishing",
            ErrorKind.PERMANENT,
        ),
        (400, "", "Access denied.", ErrorKind.PERMANENT),
        (502, "SOMETHING_NEW", "", ErrorKind.RETRYABLE),
        (401, "SOMETHING_NEW", "", ErrorKind.AUTH),
        (403, "SOMETHING_NEW", "", ErrorKind.PERMANENT),
        (422, "SOMETHING_NEW", "", ErrorKind.VALIDATION),
    ],
)
def test_error_kind_by_code_first(
    status: int, code: str, description: str, kind: ErrorKind
) -> None:
    assert map_error(status, code, description) is kind


def test_envelope_errors() -> None:
    qle = error_from_envelope(503, {"error": "QUERY_LIMIT_EXCEEDED"}, method="x.y")
    assert qle.retryable and not qle.maybe_applied and qle.status == 503 and qle.method == "x.y"
    crash = error_from_envelope(500, {"error": "INTERNAL_SERVER_ERROR"})
    assert crash.retryable and crash.maybe_applied
    html = error_from_envelope(502, None)
    assert html.code == "HTTP_502" and html.retryable
    assert str(error_from_envelope(400, {"error": "", "error_description": "Unknown TYPE"})) == (
        ": Unknown TYPE"
    )


@pytest.mark.parametrize(
    ("method", "params", "idempotent"),
    [
        ("user.get", {}, True),
        ("crm.lead.list", {}, True),
        ("telephony.externalCall.show", {}, True),
        ("telephony.externalcall.searchCrmEntities", {}, True),
        ("telephony.externalcall.register", {"EXTERNAL_CALL_ID": "1700.1"}, True),
        ("telephony.externalcall.register", {"USER_ID": 1}, False),
        ("telephony.externalcall.finish", {}, False),
        ("crm.lead.add", {}, False),
        ("tasks.task.add", {}, False),
        ("im.notify.system.add", {}, False),
    ],
)
def test_only_idempotent_methods_are_resent(
    method: str, params: dict[str, str], idempotent: bool
) -> None:
    assert is_idempotent(method, params) is idempotent
