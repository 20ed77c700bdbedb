"""Tests of the local SendGrid test server (tests/sendgrid_server.py): it must accept what the
real API accepts, reject what it rejects, and misbehave exactly as scripted."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from python_http_client import exceptions as sg_errors
from sendgrid import SendGridAPIClient

import tests.sendgrid_server as sgs
from tests.sendgrid_server import (
    DEFAULT_API_KEY,
    MAIL_SEND_PATH,
    Fault,
    SendGridServer,
    SpecMissingError,
    check_rules,
    load_log,
    product_like_body,
    sendgrid_server,  # noqa: F401  (fixture)
    sendgrid_server_factory,  # noqa: F401  (fixture)
    spec_available,
)

REAL_SPEC = sgs.discover_spec() if spec_available() else None
requires_spec = pytest.mark.skipif(
    REAL_SPEC is None,
    reason="SendGrid OpenAPI spec not found (../shared/sendgrid or $DIGEST_SENDGRID_SPEC)",
)
MakeServer = Callable[..., SendGridServer]


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib (the sendgrid client) honours HTTP(S)_PROXY; never send 127.0.0.1 through one."""
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        monkeypatch.setenv(name, ",".join(filter(None, [current, "127.0.0.1", "localhost"])))


# --------------------------------------------------------------------------------------------
# helpers


def digest_body(n: int = 1000, *, start: int = 0) -> dict[str, Any]:
    """A body built the way digest's SendGrid backend builds it: plain dicts, text/plain then
    text/html, one `to` per personalization with substitutions and List-Unsubscribe headers,
    custom_args {"edition": "12"}, categories."""
    nonce = "a1b2c3"
    personalizations = []
    for i in range(start, start + n):
        email = f"subscriber{i}@example.com"
        unsubscribe = f"https://digest.example.org/u/{i:08d}tok"
        personalizations.append(
            {
                "to": [{"email": email, "name": f"Subscriber {i}"}],
                "substitutions": {
                    f"%%{nonce}.unsubscribe_url.h%%": unsubscribe,
                    f"%%{nonce}.unsubscribe_url.t%%": unsubscribe,
                    f"%%{nonce}.email.h%%": email,
                    f"%%{nonce}.email.t%%": email,
                    f"%%{nonce}.name.h%%": f"Subscriber {i}",
                    f"%%{nonce}.name.t%%": f"Subscriber {i}",
                },
                "headers": {
                    "List-Unsubscribe": f"<{unsubscribe}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
            }
        )
    return {
        "from": {"email": "digest@digest.example.org", "name": "Weekly Digest"},
        "subject": "Weekly Digest: 12 stories",
        "content": [
            {"type": "text/plain", "value": f"Hi %%{nonce}.name.t%%\nUnsubscribe: ..."},
            {"type": "text/html", "value": f"<p>Hi %%{nonce}.name.h%%</p>"},
        ],
        "personalizations": personalizations,
        "custom_args": {"edition": "12"},
        "categories": ["digest", "weekly"],
    }


def auth(key: str = DEFAULT_API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(server: SendGridServer, body: Any, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", auth(server.api_key or DEFAULT_API_KEY))
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
        return client.post(MAIL_SEND_PATH, json=body, headers=headers, **kwargs)


def sg_client(server: SendGridServer, timeout: float = 10.0) -> SendGridAPIClient:
    sg = SendGridAPIClient(server.api_key, host=server.url)
    sg.client.timeout = timeout
    return sg


def error_fields(response: httpx.Response) -> list[str | None]:
    payload = response.json()
    for e in payload["errors"]:  # SendGrid's shape, every time
        assert set(e) == {"message", "field", "help"}, e
        assert isinstance(e["message"], str) and e["message"]
        assert e["help"] is None
    return [e["field"] for e in payload["errors"]]


@pytest.fixture
def rules_server(sendgrid_server_factory: MakeServer) -> SendGridServer:  # noqa: F811
    return sendgrid_server_factory(validate="rules")


@pytest.fixture
def no_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend the repo is a user's clone: no ../shared folder, no env var, not in CI."""
    monkeypatch.setattr(sgs, "DEFAULT_SPEC_DIR", tmp_path / "absent")
    monkeypatch.delenv(sgs.SPEC_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)


# --------------------------------------------------------------------------------------------
# valid bodies


def test_product_body_accepted_by_official_client(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    server = sendgrid_server
    assert server.validate == "full"
    assert server.schema_enabled == spec_available()
    body = digest_body(1000)
    response = sg_client(server).client.mail.send.post(request_body=body)

    assert response.status_code == 202
    assert response.body == b""
    message_id = response.headers.get("X-Message-Id")
    assert message_id
    [record] = server.requests
    assert (record.status, record.valid, record.accepted) == (202, True, True)
    assert record.message_id == message_id
    assert record.body == body
    assert record.headers["Authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert record.headers["User-Agent"].startswith("sendgrid/")
    assert server.accepted == [body]
    assert server.recipients() == [f"subscriber{i}@example.com" for i in range(1000)]


def test_product_body_accepted_over_httpx_keep_alive(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    server = sendgrid_server
    ids = []
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
        for batch in range(3):
            body = digest_body(1000, start=batch * 1000)
            r = client.post(MAIL_SEND_PATH, json=body, headers=auth())
            assert r.status_code == 202, r.text
            assert r.content == b""
            ids.append(r.headers["X-Message-Id"])
    assert len(set(ids)) == 3
    assert server.message_ids() == ids
    recipients = server.recipients()
    assert len(recipients) == len(set(recipients)) == 3000


def test_product_like_body_helper_is_valid(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    assert check_rules(product_like_body(1000)) == []
    assert post(sendgrid_server, product_like_body(1000)).status_code == 202


def test_sandbox_mode_answers_200_and_is_not_a_delivery(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    body = digest_body(5)
    body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    response = sg_client(sendgrid_server).client.mail.send.post(request_body=body)
    assert response.status_code == 200
    assert response.headers.get("X-Message-Id")
    [record] = sendgrid_server.requests
    assert (record.valid, record.sandbox, record.accepted) == (True, True, False)
    assert sendgrid_server.accepted == []
    assert sendgrid_server.recipients() == []


def test_sandbox_flag_must_be_true_boolean(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    body = digest_body(2)
    body["mail_settings"] = {"sandbox_mode": {"enable": False}}
    assert post(sendgrid_server, body).status_code == 202


def test_product_body_takes_the_fast_path() -> None:
    """The bulk check covers what the product sends (that is what keeps the server fast)."""
    body = digest_body(1000)
    fast = sgs._fast_personalizations(body["personalizations"], 20)
    assert fast is not None and fast[1] == 1000
    _duplicate_other_case(body)
    assert sgs._fast_personalizations(body["personalizations"], 20) is None


def test_rules_accept_valid_variants() -> None:
    body = digest_body(3)
    body["personalizations"][0]["cc"] = [{"email": "cc@example.com"}]
    body["personalizations"][1]["bcc"] = [{"email": "bcc@example.com", "name": "B"}]
    body["personalizations"][2]["subject"] = "Just for you"
    body["personalizations"][2]["send_at"] = int(time.time()) + 3600
    body["personalizations"][2]["custom_args"] = {"subscriber_id": "42"}
    body["reply_to"] = {"email": "editor@example.org"}
    body["headers"] = {"List-Id": "Weekly Digest <weekly.digest.example.org>"}
    assert check_rules(body) == []
    template = {k: v for k, v in digest_body(2).items() if k not in ("content", "subject")}
    template["template_id"] = "d-0123456789abcdef"
    assert check_rules(template) == []


def test_concurrent_clients(sendgrid_server_factory: MakeServer) -> None:  # noqa: F811
    server = sendgrid_server_factory(validate="rules", delay=0.01)
    threads, per_thread, size = 8, 5, 100
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        sg = sg_client(server)  # one client per thread: its headers dict is shared state
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
            for k in range(per_thread):
                body = digest_body(size, start=(t * per_thread + k) * size)
                if k % 2:
                    status = sg.client.mail.send.post(request_body=body).status_code
                else:
                    status = client.post(MAIL_SEND_PATH, json=body, headers=auth()).status_code
                with lock:
                    statuses.append(status)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    total = threads * per_thread
    assert statuses == [202] * total
    assert sorted(r.seq for r in server.requests) == list(range(1, total + 1))
    assert len(set(server.message_ids())) == total
    counts = Counter(server.recipients())
    assert len(counts) == total * size and set(counts.values()) == {1}


# --------------------------------------------------------------------------------------------
# rejections that do not need the spec (the rules)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.pop(key)


def _many_personalizations(body: dict[str, Any]) -> None:
    body["personalizations"] = digest_body(1001)["personalizations"]


def _many_recipients(body: dict[str, Any]) -> None:
    body["personalizations"] = digest_body(600)["personalizations"]
    for i, p in enumerate(body["personalizations"]):
        p["cc"] = [{"email": f"cc{i}@example.com"}]


def _duplicate_other_case(body: dict[str, Any]) -> None:
    body["personalizations"][2]["to"][0]["email"] = "SubScriber0@Example.COM"


def _duplicate_in_bcc(body: dict[str, Any]) -> None:
    body["personalizations"][1]["bcc"] = [{"email": "subscriber1@example.com"}]


def _html_first(body: dict[str, Any]) -> None:
    body["content"].reverse()


def _big_custom_args(body: dict[str, Any]) -> None:
    body["custom_args"] = {f"k{i}": "v" * 100 for i in range(100)}


RULE_CASES = {
    "1001 personalizations": (_many_personalizations, "personalizations"),
    "1200 recipients (to + cc)": (_many_recipients, "personalizations"),
    "same address twice, other case": (_duplicate_other_case, "personalizations.2.to"),
    "same address in to and bcc": (_duplicate_in_bcc, "personalizations.1.bcc"),
    "html before text": (_html_first, "content"),
    "int message custom_arg": (_set("custom_args.edition", 12), "custom_args.edition"),
    "int personalization custom_arg": (
        _set("personalizations.0.custom_args", {"subscriber_id": 7}),
        "personalizations.0.custom_args.subscriber_id",
    ),
    "custom_args >= 10,000 bytes": (_big_custom_args, "custom_args"),
    "non-string substitution": (
        _set("personalizations.1.substitutions.-n-", 3),
        "personalizations.1.substitutions.-n-",
    ),
    "CR/LF in personalization header": (
        _set("personalizations.0.headers.List-Unsubscribe", "<https://x/u>\r\nBcc: a@b.co"),
        "personalizations.0.headers.List-Unsubscribe",
    ),
    "LF in message header": (
        _set("headers", {"X-Edition": "12\nBcc: a@b.co"}),
        "headers.X-Edition",
    ),
    "non-string header value": (
        _set("personalizations.2.headers.X-Count", 1),
        "personalizations.2.headers.X-Count",
    ),
    "reserved header": (_set("headers", {"Subject": "hi"}), "headers.Subject"),
    "missing from": (_drop("from"), "from"),
    "invalid from address": (_set("from.email", "digest at example.org"), "from.email"),
    "invalid to address": (
        _set("personalizations.0.to.0.email", "subscriber0@example"),
        "personalizations.0.to.0.email",
    ),
    "name with a comma": (
        _set("personalizations.0.to.0.name", "Doe, Jane"),
        "personalizations.0.to.0.name",
    ),
    "missing personalizations": (_drop("personalizations"), "personalizations"),
    "empty personalizations": (_set("personalizations", []), "personalizations"),
    "empty to": (_set("personalizations.1.to", []), "personalizations.1.to"),
    "missing subject": (_drop("subject"), "subject"),
    "empty subject": (_set("subject", ""), "subject"),
    "CR/LF in subject": (_set("subject", "Digest\r\nBcc: a@b.co"), "subject"),
    "missing content": (_drop("content"), "content"),
    "empty content value": (_set("content.1.value", ""), "content.1.value"),
    "11 categories": (_set("categories", [f"c{i}" for i in range(11)]), "categories"),
    "duplicate categories": (_set("categories", ["a", "a"]), "categories"),
    "256-char category": (_set("categories", ["x" * 256]), "categories.0"),
    "unknown top-level field": (_set("personalisations", []), "personalisations"),
    "reply_to and reply_to_list": (
        lambda b: b.update(reply_to={"email": "a@b.co"}, reply_to_list=[{"email": "c@d.co"}]),
        "reply_to",
    ),
    "send_at > 72 h ahead": (_set("send_at", int(time.time()) + 4 * 86400), "send_at"),
    "send_at not an integer": (_set("send_at", "tomorrow"), "send_at"),
}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_rejects_rule_violation(sendgrid_server: SendGridServer, case: str) -> None:  # noqa: F811
    mutate, field = RULE_CASES[case]
    body = digest_body(3)
    mutate(body)
    response = post(sendgrid_server, body)
    assert response.status_code == 400, response.text
    assert field in error_fields(response), response.text
    [record] = sendgrid_server.requests
    assert (record.status, record.valid, record.accepted) == (400, False, False)
    assert record.message_id is None and "X-Message-Id" not in response.headers
    assert sendgrid_server.accepted == []


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_rules_run_without_the_spec(no_spec: None, case: str) -> None:
    server = SendGridServer()  # validate="full" on a clone without ../shared
    try:
        assert not server.schema_enabled
        mutate, field = RULE_CASES[case]
        body = digest_body(3)
        mutate(body)
        response = post(server, body)
        assert response.status_code == 400, response.text
        assert field in error_fields(response)
    finally:
        server.stop()


def test_rejection_through_official_client(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    body = digest_body(3)
    _html_first(body)
    with pytest.raises(sg_errors.BadRequestsError) as caught:
        sg_client(sendgrid_server).client.mail.send.post(request_body=body)
    assert caught.value.status_code == 400
    [error] = caught.value.to_dict["errors"]
    assert error["field"] == "content" and "text/plain must be first" in error["message"]


def test_errors_list_every_problem(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    body = digest_body(3)
    _html_first(body)
    _duplicate_other_case(body)
    body["custom_args"]["edition"] = 12
    fields = error_fields(post(sendgrid_server, body))
    assert {"content", "personalizations.2.to", "custom_args.edition"} <= set(fields)


# --------------------------------------------------------------------------------------------
# rejections by the spec's JSON schema


SCHEMA_CASES = {
    "ip_pool_name too short": (_set("ip_pool_name", "x"), "ip_pool_name"),
    "click_tracking.enable not boolean": (
        _set("tracking_settings", {"click_tracking": {"enable": "yes"}}),
        "tracking_settings.click_tracking.enable",
    ),
    "asm without group_id": (_set("asm", {"groups_to_display": [1]}), "asm.group_id"),
    "attachment without filename": (
        _set("attachments", [{"content": "aGk="}]),
        "attachments.0.filename",
    ),
}


@requires_spec
@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_rejects_schema_violation(sendgrid_server: SendGridServer, case: str) -> None:  # noqa: F811
    assert sendgrid_server.schema_enabled
    mutate, field = SCHEMA_CASES[case]
    body = digest_body(3)
    mutate(body)
    response = post(sendgrid_server, body)
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and e["message"].startswith("schema: ") for e in errors), errors


@requires_spec
@pytest.mark.parametrize(
    ("mutate", "field"),
    [(_drop("personalizations"), "personalizations"), (_set("subject", ""), "subject")],
    ids=["personalizations missing", "subject empty"],
)
def test_schema_reports_alongside_rules(
    sendgrid_server: SendGridServer,  # noqa: F811
    mutate: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    body = digest_body(3)
    mutate(body)
    errors = post(sendgrid_server, body).json()["errors"]
    by_field = [e["message"] for e in errors if e["field"] == field]
    assert any(m.startswith("schema: ") for m in by_field), errors
    assert any(not m.startswith("schema: ") for m in by_field), errors


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_schema_only_cases_pass_the_rules(rules_server: SendGridServer, case: str) -> None:
    """What only the schema catches is accepted without it (so the spec really matters)."""
    mutate, _ = SCHEMA_CASES[case]
    body = digest_body(3)
    mutate(body)
    assert post(rules_server, body).status_code == 202


def test_spec_absent_skips_schema_only(no_spec: None) -> None:
    with SendGridServer() as server:
        assert server.spec_path is None and not server.schema_enabled
        body = digest_body(3)
        body["ip_pool_name"] = "x"  # schema-only: passes
        assert post(server, body).status_code == 202
        _duplicate_other_case(body)  # a rule: still rejected
        assert post(server, body).status_code == 400


def test_spec_absent_in_ci_fails_loudly(no_spec: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(SpecMissingError, match="spec is missing"):
        SendGridServer()
    with SendGridServer(validate="rules") as server:  # asked not to use the schema: fine
        assert post(server, digest_body(2)).status_code == 202


def test_spec_env_var_pointing_nowhere_fails(
    no_spec: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sgs.SPEC_ENV, "/nonexistent/mail_send_mock.json")
    with pytest.raises(SpecMissingError, match=sgs.SPEC_ENV):
        SendGridServer()


@requires_spec
def test_spec_env_var_is_honoured(no_spec: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert REAL_SPEC is not None
    monkeypatch.setenv(sgs.SPEC_ENV, str(REAL_SPEC))
    with SendGridServer() as server:
        assert server.schema_enabled and server.spec_path == REAL_SPEC
        body = digest_body(2)
        body["ip_pool_name"] = "x"
        assert post(server, body).status_code == 400


@requires_spec
def test_upstream_spec_custom_args_bug_is_patched(tmp_path: Path) -> None:
    """The published spec types message-level custom_args as a string; we fix it in memory."""
    assert REAL_SPEC is not None
    spec = json.loads(REAL_SPEC.read_text())
    schema = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
    schema["schema"]["properties"]["custom_args"] = {"type": "string"}  # the upstream bug
    upstream = tmp_path / "tsg_mail_v3.json"
    upstream.write_text(json.dumps(spec))
    with SendGridServer(spec_path=upstream) as server:
        assert post(server, digest_body(2)).status_code == 202


# --------------------------------------------------------------------------------------------
# auth


@pytest.mark.parametrize(
    "headers",
    [{}, auth("SG.wrong"), {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}],
    ids=["missing", "wrong key", "basic", "empty bearer"],
)
def test_auth_required(sendgrid_server: SendGridServer, headers: dict[str, str]) -> None:  # noqa: F811
    response = post(sendgrid_server, digest_body(2), headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "errors": [{"message": "authorization required", "field": None, "help": None}]
    }
    assert sendgrid_server.requests[0].status == 401
    assert sendgrid_server.accepted == []


def test_wrong_key_with_official_client(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    sg = SendGridAPIClient("SG.not-the-key", host=sendgrid_server.url)
    sg.client.timeout = 5
    with pytest.raises(sg_errors.UnauthorizedError) as caught:
        sg.client.mail.send.post(request_body=digest_body(2))
    assert json.loads(caught.value.body)["errors"][0]["message"] == "authorization required"


def test_configurable_key_and_any_key(sendgrid_server_factory: MakeServer) -> None:  # noqa: F811
    custom = sendgrid_server_factory(api_key="SG.custom")
    assert post(custom, digest_body(2), headers=auth("SG.custom")).status_code == 202
    assert post(custom, digest_body(2), headers=auth()).status_code == 401
    anything = sendgrid_server_factory(api_key=None)
    assert post(anything, digest_body(2), headers=auth("SG.whatever")).status_code == 202
    assert post(anything, digest_body(2), headers={}).status_code == 401


# --------------------------------------------------------------------------------------------
# HTTP details


def test_http_odds_and_ends(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    server = sendgrid_server
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        r = client.post("/v3/mail/batch", json={}, headers=auth())
        assert r.status_code == 404 and error_fields(r) == [None]
        assert client.get(MAIL_SEND_PATH, headers=auth()).status_code == 405
        r = client.post(
            MAIL_SEND_PATH, content=b"{}", headers={**auth(), "Content-Type": "text/plain"}
        )
        assert r.status_code == 415
        json_type = {**auth(), "Content-Type": "application/json"}
        r = client.post(MAIL_SEND_PATH, content=b'{"from": ', headers=json_type)
        assert r.status_code == 400 and r.json()["errors"][0]["message"] == "Bad Request"
        r = client.post(MAIL_SEND_PATH, content=b'{"send_at": NaN}', headers=json_type)
        assert r.status_code == 400
        r = client.post(MAIL_SEND_PATH, content=b"[1, 2]", headers=json_type)
        assert r.status_code == 400
        gz = gzip.compress(json.dumps(digest_body(3)).encode())
        r = client.post(
            MAIL_SEND_PATH, content=gz, headers={**json_type, "Content-Encoding": "gzip"}
        )
        assert r.status_code == 202
        raw = json.dumps(digest_body(3, start=10)).encode()
        chunks = (raw[i : i + 1000] for i in range(0, len(raw), 1000))
        r = client.post(MAIL_SEND_PATH, content=chunks, headers=json_type)  # chunked
        assert r.status_code == 202
    assert [r.status for r in server.requests] == [404, 405, 415, 400, 400, 400, 202, 202]
    assert server.requests[3].body_text == '{"from": '
    assert len(server.recipients()) == 6


def test_oversized_body_is_413(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    conn = http.client.HTTPConnection(sendgrid_server.host, sendgrid_server.port, timeout=5)
    try:
        conn.putrequest("POST", MAIL_SEND_PATH)
        conn.putheader("Authorization", f"Bearer {DEFAULT_API_KEY}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(31 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["errors"][0]["message"] == "content too large"
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# fault injection


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        (Fault(status=500), sg_errors.InternalServerError, "internal server error"),
        (Fault(status=503), sg_errors.ServiceUnavailableError, "service unavailable"),
        (
            Fault(status=400, message="Invalid batch id"),
            sg_errors.BadRequestsError,
            "Invalid batch id",
        ),
        (Fault(status=401), sg_errors.UnauthorizedError, "authorization required"),
        (Fault(status=403), sg_errors.ForbiddenError, "access forbidden"),
        (Fault(status=502), sg_errors.HTTPError, "bad gateway"),
    ],
    ids=["500", "503", "400", "401", "403", "502"],
)
def test_scripted_error_then_normal(
    sendgrid_server: SendGridServer,  # noqa: F811
    fault: Fault,
    error: type[Exception],
    message: str,
) -> None:
    server = sendgrid_server
    server.script(fault)
    assert server.pending_faults == 1
    sg = sg_client(server)
    body = digest_body(3)
    with pytest.raises(error) as caught:
        sg.client.mail.send.post(request_body=body)
    assert caught.value.status_code == fault.status  # type: ignore[attr-defined]
    assert json.loads(caught.value.body) == {  # type: ignore[attr-defined]
        "errors": [{"message": message, "field": None, "help": None}]
    }
    assert server.pending_faults == 0
    assert sg.client.mail.send.post(request_body=body).status_code == 202
    first, second = server.requests
    assert (first.status, first.accepted, first.valid, first.fault) == (
        fault.status,
        False,
        None,
        f"status={fault.status}",
    )
    assert first.body == body  # faults are logged with what was received
    assert (second.status, second.accepted, second.fault) == (202, True, None)
    assert server.recipients() == [f"subscriber{i}@example.com" for i in range(3)]


def test_429_with_rate_limit_headers(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    reset = str(int(time.time()) + 7)
    sendgrid_server.script(
        Fault(status=429, headers={"X-RateLimit-Reset": reset, "Retry-After": "1"}),
        Fault(status=429),
        Fault.rate_limited(reset_in=3, retry_after=3),
    )
    sg = sg_client(sendgrid_server)
    with pytest.raises(sg_errors.TooManyRequestsError) as caught:
        sg.client.mail.send.post(request_body=digest_body(2))
    assert caught.value.headers["X-RateLimit-Reset"] == reset
    assert caught.value.headers["Retry-After"] == "1"
    assert caught.value.to_dict["errors"][0]["message"] == "too many requests"

    r = post(sendgrid_server, digest_body(2))  # defaults when the script gives no headers
    assert r.status_code == 429
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(r.headers["X-RateLimit-Reset"]) - time.time() <= 2

    r = post(sendgrid_server, digest_body(2))
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert post(sendgrid_server, digest_body(2)).status_code == 202


def test_hang_makes_official_client_time_out(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    sendgrid_server.script(Fault(hang=2.0))
    sg = sg_client(sendgrid_server, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        sg.client.mail.send.post(request_body=digest_body(2))
    assert time.monotonic() - started < 1.5
    [record] = sendgrid_server.requests  # logged on arrival, before hanging
    assert (record.answered, record.status, record.accepted) == (False, None, False)
    assert record.fault == "hang=2"
    assert (
        sg_client(sendgrid_server).client.mail.send.post(request_body=digest_body(2)).status_code
        == 202
    )


def test_hang_makes_httpx_time_out(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    sendgrid_server.script(Fault(hang=2.0))
    with pytest.raises(httpx.ReadTimeout):
        post(sendgrid_server, digest_body(2), timeout=0.2)


def test_hang_after_accepting(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    """The realistic timeout: SendGrid took the batch, the client gave up waiting."""
    sendgrid_server.script(Fault(hang=2.0, process=True))
    with pytest.raises(httpx.ReadTimeout):
        post(sendgrid_server, digest_body(2), timeout=0.2)
    assert sendgrid_server.recipients() == ["subscriber0@example.com", "subscriber1@example.com"]


def test_drop_after_receiving(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    body = digest_body(4)
    sendgrid_server.script(Fault(drop=True), Fault(drop=True))
    # urllib raises http.client.RemoteDisconnected (a ConnectionResetError, not a URLError)
    with pytest.raises(ConnectionError):
        sg_client(sendgrid_server).client.mail.send.post(request_body=body)
    with pytest.raises(httpx.RemoteProtocolError):
        post(sendgrid_server, body)
    records = sendgrid_server.requests
    assert [(r.answered, r.status, r.valid, r.accepted) for r in records] == [
        (False, None, True, True)
    ] * 2
    assert all(r.message_id for r in records)
    # the server "sent" both: a client that retries blindly double-sends, visibly
    assert Counter(sendgrid_server.recipients()) == {
        f"subscriber{i}@example.com": 2 for i in range(4)
    }


def test_drop_without_processing_and_invalid_drop(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    bad = digest_body(2)
    _html_first(bad)
    sendgrid_server.script(Fault(drop=True, process=False), Fault(drop=True))
    for body in (digest_body(2), bad):
        with pytest.raises(httpx.RemoteProtocolError):
            post(sendgrid_server, body)
    first, second = sendgrid_server.requests
    assert (first.valid, first.accepted) == (None, False)
    assert (second.valid, second.accepted) == (False, False)
    assert sendgrid_server.accepted == []


def test_accepted_but_answered_500(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    sendgrid_server.script(Fault(status=500, process=True))
    assert post(sendgrid_server, digest_body(2)).status_code == 500
    [record] = sendgrid_server.requests
    assert record.accepted and record.status == 500


def test_slow_answers(sendgrid_server_factory: MakeServer) -> None:  # noqa: F811
    server = sendgrid_server_factory(validate="rules", delay=0.05)
    server.script(Fault(delay=0.4))
    started = time.monotonic()
    assert post(server, digest_body(2)).status_code == 202
    assert time.monotonic() - started >= 0.45  # the fault's delay on top of the server's
    started = time.monotonic()
    assert post(server, digest_body(2, start=2)).status_code == 202
    assert 0.05 <= time.monotonic() - started < 0.4
    assert len(server.accepted) == 2


def test_script_every_until_cleared(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    sendgrid_server.script(Fault(status=500))
    sendgrid_server.script_every(Fault(status=503))
    statuses = [post(sendgrid_server, digest_body(2)).status_code for _ in range(3)]
    sendgrid_server.script_every(None)
    statuses.append(post(sendgrid_server, digest_body(2)).status_code)
    assert statuses == [500, 503, 503, 202]


# --------------------------------------------------------------------------------------------
# the log


def test_jsonl_log_is_complete(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    server = sendgrid_server
    assert server.log_path is not None
    sandbox = digest_body(2, start=50)
    sandbox["mail_settings"] = {"sandbox_mode": {"enable": True}}
    bad = digest_body(2, start=60)
    _html_first(bad)
    server.script(Fault(status=429), Fault(drop=True))
    sent = [digest_body(2, start=k * 10) for k in range(4)] + [sandbox, bad]
    lines_seen = []
    for k, body in enumerate(sent):
        with contextlib.suppress(httpx.RemoteProtocolError):
            post(server, body, headers=auth("SG.wrong") if k == 2 else auth())
        # written and flushed before the answer: the file is complete at every moment
        lines_seen.append(len(server.log_path.read_text().splitlines()))
    assert lines_seen == [1, 2, 3, 4, 5, 6]

    log = load_log(server.log_path)
    assert [r["seq"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["body"] for r in log] == sent
    assert [r["status"] for r in log] == [429, None, 401, 202, 200, 400]
    assert [r["answered"] for r in log] == [True, False, True, True, True, True]
    assert [r["accepted"] for r in log] == [False, True, False, True, False, False]
    assert [r["fault"] for r in log] == ["status=429", "drop process", None, None, None, None]
    assert all(r["headers"]["Authorization"] == "Bearer <redacted>" for r in log)
    assert log[4]["sandbox"] and log[5]["errors"][0]["field"] == "content"
    accepted = [a for r in log if r["accepted"] for a in r["recipients"]]
    assert accepted == server.recipients()
    memory = server.requests
    assert [r.message_id for r in memory] == [r["message_id"] for r in log]
    assert [r.time for r in memory] == [r["time"] for r in log]


def test_jsonl_one_line_per_request_whatever_the_body(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    body = digest_body(2)
    body["content"][0]["value"] = "line one\nline two\u2028still two\u2029\x85 and é"
    raw = json.dumps(body, indent=2, ensure_ascii=False).encode()  # newlines between tokens
    response = httpx.post(
        sendgrid_server.url + MAIL_SEND_PATH,
        content=raw,
        headers={**auth(), "Content-Type": "application/json; charset=utf-8"},
        trust_env=False,
    )
    assert response.status_code == 202
    assert sendgrid_server.log_path is not None
    text = sendgrid_server.log_path.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1
    assert load_log(sendgrid_server.log_path)[0]["body"] == body


def test_reset(sendgrid_server: SendGridServer) -> None:  # noqa: F811
    post(sendgrid_server, digest_body(2))
    sendgrid_server.script(Fault(status=500))
    sendgrid_server.reset()
    assert sendgrid_server.requests == [] and sendgrid_server.pending_faults == 0
    assert sendgrid_server.stats() == {}
    assert sendgrid_server.log_path is not None
    assert sendgrid_server.log_path.read_text() == ""
    assert post(sendgrid_server, digest_body(2)).status_code == 202
    assert [r["seq"] for r in load_log(sendgrid_server.log_path)] == [2]


def test_keep_meta_and_none(sendgrid_server_factory: MakeServer, tmp_path: Path) -> None:  # noqa: F811
    meta = sendgrid_server_factory(keep="meta", log_path=tmp_path / "meta.jsonl")
    assert post(meta, digest_body(3)).status_code == 202
    [record] = meta.requests
    assert record.body is None and meta.recipients() == [
        f"subscriber{i}@example.com" for i in range(3)
    ]
    assert load_log(tmp_path / "meta.jsonl")[0]["body"] == digest_body(3)

    nothing = sendgrid_server_factory(keep="none", validate="none")
    assert post(nothing, digest_body(3)).status_code == 202
    _html_first(body := digest_body(3))
    assert post(nothing, body).status_code == 202  # validate="none": no rules either
    assert post(nothing, digest_body(3), headers=auth("SG.wrong")).status_code == 401
    assert nothing.requests == []
    assert nothing.stats() == {"received": 3, "accepted": 2, "202": 2, "401": 1}


def test_wait_for_requests_and_on_request(sendgrid_server_factory: MakeServer) -> None:  # noqa: F811
    seen: list[int] = []
    server = sendgrid_server_factory(on_request=lambda r: seen.append(r.seq))
    with pytest.raises(TimeoutError):
        server.wait_for_requests(1, timeout=0.05)
    sender = threading.Thread(target=lambda: [post(server, digest_body(2)) for _ in range(2)])
    sender.start()
    records = server.wait_for_requests(2, timeout=10)
    sender.join(10)
    assert len(records) >= 2 and seen == [1, 2]


# --------------------------------------------------------------------------------------------
# standalone


def test_standalone_server(tmp_path: Path) -> None:
    log_path = tmp_path / "standalone.jsonl"
    script = Path(__file__).with_name("sendgrid_server.py")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--delay", "0.05", "--log", str(log_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        started = time.monotonic()
        r = httpx.post(url + MAIL_SEND_PATH, json=digest_body(5), headers=auth(), trust_env=False)
        assert r.status_code == 202 and r.headers["X-Message-Id"]
        assert time.monotonic() - started >= 0.05
        bad = digest_body(5)
        _html_first(bad)
        r = httpx.post(url + MAIL_SEND_PATH, json=bad, headers=auth(), trust_env=False)
        assert r.status_code == 400  # standalone default: validate="rules"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "'received': 2" in err
    assert [r["status"] for r in load_log(log_path)] == [202, 400]
