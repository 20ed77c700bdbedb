"""Delivery backends against real parts: files on disk, a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digest.deliver.base import Letterhead, Personalizer
from digest.deliver.message import build
from digest.deliver.outbox import OutboxBackend
from digest.deliver.smtp import SmtpBackend, SmtpSettings
from digest.errors import PermanentDeliveryError, TransientDeliveryError
from digest.model import Batch, Composed, Entry, FeedSource, Recipient, Selection
from digest.render.edition import Renderer, RenderSettings
from digest.state.tokens import Signer, subscriber_id

from .helpers import NOW
from .smtp_server import SmtpServer

# aiosmtpd does not close the server side of a connection the client dropped.
HEAD = Letterhead(
    "Daily <digest@example.org>",
    "editor@example.org",
    "Daily <daily.example.org>",
    "https://d.example",
)
SIGNER = Signer(b"s" * 32)
PERSONAL = Personalizer(SIGNER, "https://d.example")


def composed(title: str = "A headline") -> Composed:
    source = FeedSource("https://a.example/feed", "A")
    e = Entry(
        source=source,
        source_title="A",
        identity="1",
        title=title,
        link="https://a.example/1",
        canonical_link=None,
        summary="Summary text",
        content_html="",
        published=NOW,
        dated=True,
    )
    r = Renderer(
        RenderSettings(title="Daily", base_url="https://d.example", postal_address="1 Quay Street")
    )
    return r.compose(3, Selection((e,), (), ()), NOW, "nonce123")


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def test_message_headers_parts_and_links() -> None:
    c = composed()
    r = Recipient(42, "ada@example.org", "Ada")
    msg = parse(build(c, r, PERSONAL.values(r), HEAD).as_bytes())
    assert msg["From"] == "Daily <digest@example.org>"
    assert msg["To"] == "Ada <ada@example.org>"
    assert msg["Subject"] == "Daily: A headline"
    assert msg["Reply-To"] == "editor@example.org"
    assert msg["Message-ID"] == "<digest.3.42.nonce123@example.org>"
    assert msg["Date"] and msg["List-Id"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = msg["List-Unsubscribe"].strip().strip("<>")
    assert link.startswith("https://d.example/unsubscribe/")
    token = link.rsplit("/", 1)[1]
    assert subscriber_id(token) == 42 and SIGNER.verify(token, 42, "ada@example.org")
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert link in text and link in html
    assert "1 Quay Street" in text and "1 Quay Street" in html
    assert "%%nonce123" not in text + html


def test_no_cr_lf_reaches_a_header() -> None:
    c = composed("Hello\r\nBcc: everyone@example.org\r\n\r\n<b>x</b>")
    r = Recipient(1, "ada@example.org", "Ada\r\nBcc: evil@example.org")
    raw = build(c, r, PERSONAL.values(r), HEAD).as_bytes()
    msg = parse(raw)
    assert msg["Bcc"] is None
    head = raw.split(b"\n\n", 1)[0]
    assert b"\nBcc:" not in head
    assert "\n" not in msg["Subject"] and "\n" not in msg["To"]


def test_outbox_writes_one_file_per_recipient_atomically(tmp_path: Path) -> None:
    backend = OutboxBackend(tmp_path / "out", HEAD, PERSONAL)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".digest-stale").write_text("half a message")  # left by a crash
    sender = backend.open(composed())
    recipients = (Recipient(1, "ada@example.org", "Ada"), Recipient(2, "grace@example.org"))
    for r in recipients:
        sender.send(Batch(3, r.subscriber_id, (r,)))
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["00003-000001-ada@example.org.eml", "00003-000002-grace@example.org.eml"]
    assert parse((tmp_path / "out" / files[1]).read_bytes())["To"] == "grace@example.org"


def test_outbox_leaves_a_live_writers_temporary_file_alone(tmp_path: Path) -> None:
    """Another sender (a sign-up mail, another edition's worker) may be mid-write: only
    the temporary files of processes that are gone are a crash's leftovers."""
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (out / f".digest-{dead}-abc").write_text("half a message")  # its writer has exited
    (out / f".digest-{os.getppid()}-abc").write_text("being written")  # alive: our parent
    (out / f".digest-{os.getpid()}-abc").write_text("being written")  # alive: another thread
    OutboxBackend(out, HEAD, PERSONAL).open(composed())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f".digest-{os.getppid()}-abc", f".digest-{os.getpid()}-abc"]
    )


def test_outbox_one_off_mails_to_one_subscriber_are_separate_files(tmp_path: Path) -> None:
    """Two confirmation mails (edition 0) to one subscriber: the second does not replace
    the first."""
    sender = OutboxBackend(tmp_path / "out", HEAD, PERSONAL).open(composed())
    ada = Recipient(1, "ada@example.org", "Ada")
    sender.send(Batch(0, 7, (ada,)))
    sender.send(Batch(0, 8, (ada,)))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "00000-000007-000001-ada@example.org.eml",
        "00000-000008-000001-ada@example.org.eml",
    ]


def test_outbox_unwritable_folder_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(PermanentDeliveryError) as info:
        OutboxBackend(tmp_path / "file" / "out", HEAD, PERSONAL).open(composed())
    assert info.value.fatal


def smtp_backend(server: SmtpServer, **kw: object) -> SmtpBackend:
    settings = SmtpSettings(host="127.0.0.1", port=server.port, timeout=5, **kw)  # type: ignore[arg-type]
    return SmtpBackend(settings, HEAD, PERSONAL)


RECIPIENTS = [Recipient(i, f"user{i}@example.org", f"User {i}") for i in range(1, 6)]


def send_all(backend: SmtpBackend) -> None:
    sender = backend.open(composed())
    try:
        for r in RECIPIENTS:
            sent = sender.send(Batch(3, r.subscriber_id, (r,)))
            assert sent.provider_id and sent.provider_id.startswith("Q")
    finally:
        sender.close()


def test_smtp_starttls_with_self_signed_cert_reuses_one_connection(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, security="starttls", user=("digest", "s3cret")) as server:
        backend = smtp_backend(
            server, security="starttls", username="digest", password="s3cret", ca_file=server.cert
        )
        send_all(backend)
        assert backend.connections_opened == 1
        assert server.connections == 1
        assert len(server.received) == 5
        got = server.received[0]
        assert got.mail_from == "digest@example.org" and got.rcpt_tos == ["user1@example.org"]
        msg = got.message
        assert msg["List-Unsubscribe"] and msg["Subject"] == "Daily: A headline"


def test_smtp_implicit_tls(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, security="tls") as server:
        backend = smtp_backend(server, security="tls", ca_file=server.cert)
        send_all(backend)
        assert len(server.received) == 5 and server.connections == 1


def test_smtp_plain_relay(tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as server:
        send_all(smtp_backend(server, security="none"))
        assert len(server.received) == 5


def test_untrusted_certificate_is_fatal(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, security="starttls") as server:
        sender = smtp_backend(server, security="starttls").open(composed())
        with pytest.raises(PermanentDeliveryError, match="not trusted") as info:
            sender.send(Batch(3, 1, (RECIPIENTS[0],)))
        assert info.value.fatal


def test_wrong_password_is_fatal(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, security="starttls", user=("digest", "right")) as server:
        sender = smtp_backend(
            server, security="starttls", username="digest", password="wrong", ca_file=server.cert
        ).open(composed())
        with pytest.raises(PermanentDeliveryError, match="refused the login") as info:
            sender.send(Batch(3, 1, (RECIPIENTS[0],)))
        assert info.value.fatal


def test_starttls_missing_is_fatal(tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as server:
        sender = smtp_backend(server, security="starttls").open(composed())
        with pytest.raises(PermanentDeliveryError, match="does not offer STARTTLS"):
            sender.send(Batch(3, 1, (RECIPIENTS[0],)))


def test_temporary_and_permanent_replies(tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as server:
        sender = smtp_backend(server, security="none").open(composed())
        server.handler.replies[:] = ["451 4.3.0 try again later", "554 5.7.1 rejected"]
        with pytest.raises(TransientDeliveryError, match="451"):
            sender.send(Batch(3, 1, (RECIPIENTS[0],)))
        with pytest.raises(PermanentDeliveryError, match="554") as info:
            sender.send(Batch(3, 1, (RECIPIENTS[0],)))
        assert not info.value.fatal
        sender.send(Batch(3, 1, (RECIPIENTS[0],)))  # reconnects and goes through
        assert len(server.received) == 1
        sender.close()


def test_connection_refused_is_transient() -> None:
    from .smtp_server import free_port

    backend = SmtpBackend(
        SmtpSettings("127.0.0.1", free_port(), security="none", timeout=2), HEAD, PERSONAL
    )
    with pytest.raises(TransientDeliveryError, match="cannot connect"):
        backend.open(composed()).send(Batch(3, 1, (RECIPIENTS[0],)))


# -- SMTP: connections, rate, DKIM, ambiguity -------------------------------------------------


def test_max_messages_per_connection(tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as server:
        backend = smtp_backend(server, security="none", max_per_connection=2)
        send_all(backend)
        assert len(server.received) == 5
        assert backend.connections_opened == 3 and server.connections == 3


def test_rate_limit_spaces_messages_across_workers() -> None:
    from digest.deliver.smtp import RateLimit

    now = [100.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)

    limit = RateLimit(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limit.wait()  # the clock stands still: each waits its turn
    assert sleeps == [0.25, 0.5, 0.75, 1.0]
    now[0] = 200.0
    limit.wait()  # long after: no wait
    assert len(sleeps) == 4


def rsa_key(folder: Path) -> tuple[Path, str]:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def test_dkim_signature_covers_the_one_click_headers_and_verifies(tmp_path: Path) -> None:
    import dkim

    from digest.deliver.dkim import load_dkim_key

    path, record = rsa_key(tmp_path)
    key = load_dkim_key(path, "digest", "example.org")
    with SmtpServer(tmp_path) as server:
        send_all(smtp_backend(server, security="none", dkim=key))
        assert len(server.received) == 5
        data = server.received[0].data
    msg = parse(data)
    tags = dict(
        part.strip().split("=", 1) for part in msg["DKIM-Signature"].split(";") if "=" in part
    )
    signed = {h.strip().lower() for h in tags["h"].replace(" ", "").split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= signed
    assert tags["d"] == "example.org" and tags["s"] == "digest"

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"digest._domainkey.example.org."
        return record.encode()

    assert dkim.verify(data, dnsfunc=dns)
    tampered = data.replace(b"List-Unsubscribe: <https://", b"List-Unsubscribe: <http://")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_an_unusable_dkim_key_is_a_clear_error(tmp_path: Path) -> None:
    from digest.deliver.dkim import load_dkim_key

    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ValueError, match="not a usable DKIM private key"):
        load_dkim_key(tmp_path / "bad.pem", "s", "example.org")
    with pytest.raises(ValueError, match="cannot read the DKIM key"):
        load_dkim_key(tmp_path / "missing.pem", "s", "example.org")


class DroppingSmtp:
    """A bare SMTP server that reads one whole message and hangs up without replying."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            f = conn.makefile("rb")
            conn.sendall(b"220 test\r\n")
            while line := f.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250 test\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    self.got += 1
                    return  # the message is in; no "250"
                else:
                    conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.sock.close()


def test_a_connection_lost_after_the_message_went_out_is_unanswered() -> None:
    from digest.errors import UnansweredError

    server = DroppingSmtp()
    try:
        backend = SmtpBackend(
            SmtpSettings("127.0.0.1", server.port, security="none", timeout=5), HEAD, PERSONAL
        )
        with pytest.raises(UnansweredError, match="may have been queued"):
            backend.open(composed()).send(Batch(3, 1, (RECIPIENTS[0],)))
        assert server.got == 1
    finally:
        server.close()
