"""``digest check --deliverability`` (issue 11): SPF, DKIM and DMARC looked up with
dnspython on a DNS server the tests run on 127.0.0.1 (dnslib), never the internet."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from digest.deliver.dkim import DkimKey
from digest.deliver.dnscheck import check
from digest.mail import authrecords as ar
from digest.mail.authrecords import Setup, Status

from .dns_server import Zone, dns_server
from .helpers import PYTHON, Project
from .test_dkim import make_key

DOMAIN = "harbour.example.org"
RELAY_IP = "93.184.216.34"  # only ever data in the local server's answers
SENDGRID_SPF = {"sendgrid.net": [("TXT", "v=spf1 ip4:167.89.0.0/17 ip4:168.245.0.0/17 -all")]}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    return make_key(tmp_path_factory.mktemp("dkim"), "rsa")


def smtp_setup(key: DkimKey, relay: str = f"mail.{DOMAIN}") -> Setup:
    return Setup(DOMAIN, "smtp", relay, ("digest", DOMAIN, key.public_record()))


def statuses(zone: Zone, setup: Setup) -> dict[str, Status]:
    with dns_server(zone) as (server, _asked):
        report = check(setup, server)
    out: dict[str, Status] = {}
    for f in report.findings:
        out[f.check] = Status.FAIL if Status.FAIL in (out.get(f.check), f.status) else f.status
    return out


def good_smtp_zone(key: DkimKey, **changes: Any) -> dict[str, Any]:
    zone: dict[str, Any] = {
        DOMAIN: [("TXT", "v=spf1 mx -all"), ("MX", f"mail.{DOMAIN}")],
        f"mail.{DOMAIN}": [("A", RELAY_IP)],
        f"digest._domainkey.{DOMAIN}": [("TXT", key.public_record())],
        f"_dmarc.{DOMAIN}": [("TXT", "v=DMARC1; p=quarantine; rua=mailto:d@harbour.example.org")],
    }
    zone.update(changes)
    return {k: v for k, v in zone.items() if v is not None}


def test_a_well_set_up_smtp_sender_passes(key: DkimKey) -> None:
    with dns_server(good_smtp_zone(key)) as (server, resolver):
        report = check(smtp_setup(key), server)
    assert report.ok
    assert [(f.check, f.status) for f in report.findings] == [
        ("SPF", Status.OK), ("DKIM", Status.OK), ("DMARC", Status.OK)
    ]  # fmt: skip
    assert "lets mail.harbour.example.org (93.184.216.34) send" in report.findings[0].says
    assert ("harbour.example.org", "MX") in resolver.asked  # the mx term was followed


@pytest.mark.parametrize(
    ("changes", "check_name", "status", "says"),
    [
        ({DOMAIN: [("MX", f"mail.{DOMAIN}")]}, "SPF", Status.FAIL, "no SPF record"),
        ({DOMAIN: [("TXT", "v=spf1 mx -all"), ("TXT", "v=spf1 a -all")]}, "SPF", Status.FAIL,
         "more than one SPF record"),
        ({DOMAIN: [("TXT", "v=spf1 ip4:10.9.0.0/16 -all")]}, "SPF", Status.FAIL,
         "does not let mail.harbour.example.org (93.184.216.34) send"),
        ({DOMAIN: [("TXT", "v=spf1 ip4:93.184.216.0/24 -all")]}, "SPF", Status.OK, "lets"),
        ({DOMAIN: [("TXT", "v=spf1 -ip4:93.184.216.34 +all")]}, "SPF", Status.FAIL, "+all"),
        ({DOMAIN: [("TXT", "v=spf1 include:a.example.net -all")],
          "a.example.net": [("TXT", "v=spf1 ip4:93.184.216.34 -all")]}, "SPF", Status.OK,
         "lets"),
        ({f"digest._domainkey.{DOMAIN}": None}, "DKIM", Status.FAIL, "no DKIM key published"),
        ({f"digest._domainkey.{DOMAIN}": [("TXT", "v=DKIM1; k=rsa; p=MIIBIjANBgkq")]}, "DKIM",
         Status.FAIL, "does not match delivery.smtp.dkim_key_file"),
        ({f"digest._domainkey.{DOMAIN}": [("TXT", "v=DKIM1; k=rsa; p=")]}, "DKIM",
         Status.FAIL, "revoked"),
        ({f"_dmarc.{DOMAIN}": None}, "DMARC", Status.FAIL, "no DMARC record"),
        ({f"_dmarc.{DOMAIN}": None, "_dmarc.example.org": [("TXT", "v=DMARC1; p=reject")]},
         "DMARC", Status.OK, "p=reject"),
        ({f"_dmarc.{DOMAIN}": [("TXT", "v=DMARC1; rua=mailto:x@example.org")]}, "DMARC",
         Status.FAIL, "no valid p="),
        ({f"_dmarc.{DOMAIN}": [("TXT", "SERVFAIL")]}, "DMARC", Status.UNKNOWN,
         "could not look it up"),
    ],
)  # fmt: skip
def test_what_is_wrong_is_named(
    key: DkimKey, changes: dict[str, Any], check_name: str, status: Status, says: str
) -> None:
    with dns_server(good_smtp_zone(key, **changes)) as (server, _resolver):
        report = check(smtp_setup(key), server)
    (finding,) = [f for f in report.findings if f.check == check_name]
    assert finding.status is status and says in finding.says, finding
    assert report.ok is (status in (Status.OK, Status.WARN) and all(
        f.status in (Status.OK, Status.WARN) for f in report.findings
    ))  # fmt: skip
    if status is Status.FAIL and check_name == "DKIM" and "revoked" not in says:
        assert finding.publish == key.public_record()  # the record to publish, exactly
    if status is Status.FAIL and check_name == "DMARC" and "p=" not in says:
        assert finding.publish == f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}"


def test_too_many_spf_lookups_fail() -> None:
    chain: dict[str, Any] = {DOMAIN: [("TXT", "v=spf1 include:i0.example.net -all")]}
    for i in range(11):
        chain[f"i{i}.example.net"] = [("TXT", f"v=spf1 include:i{i + 1}.example.net -all")]
    chain["i11.example.net"] = [("TXT", "v=spf1 ip4:93.184.216.34 -all")]
    with dns_server(chain) as (server, _resolver):
        report = check(Setup(DOMAIN, "outbox"), server)
    assert report.findings[0].status is Status.FAIL
    assert "12 DNS lookups" in report.findings[0].says


def test_sendgrid_needs_its_include_and_its_domain_authentication() -> None:
    zone: dict[str, Any] = {
        DOMAIN: [("TXT", "v=spf1 include:sendgrid.net ~all")],
        "s1._domainkey.harbour.example.org": [("TXT", "k=rsa; t=s; p=MIGfMA0GCSqGSIb3DQEB")],
        f"_dmarc.{DOMAIN}": [("TXT", "v=DMARC1; p=none")],
        **SENDGRID_SPF,
    }
    assert statuses(zone, Setup(DOMAIN, "sendgrid")) == {
        "SPF": Status.OK, "DKIM": Status.OK, "DMARC": Status.OK
    }  # fmt: skip
    del zone["s1._domainkey.harbour.example.org"]
    zone[DOMAIN] = [("TXT", "v=spf1 mx ~all")]
    got = statuses(zone, Setup(DOMAIN, "sendgrid"))
    assert got == {"SPF": Status.WARN, "DKIM": Status.FAIL, "DMARC": Status.FAIL}


def test_a_known_relay_needs_its_include(key: DkimKey) -> None:
    zone = good_smtp_zone(key, **{DOMAIN: [("TXT", "v=spf1 mx -all")]})
    setup = smtp_setup(key, relay="smtp.mailgun.org")
    got = statuses(zone, setup)
    assert got["SPF"] is Status.FAIL
    zone[DOMAIN] = [("TXT", "v=spf1 include:mailgun.org -all")]
    zone["mailgun.org"] = [("TXT", "v=spf1 ip4:69.72.32.0/20 -all")]
    assert statuses(zone, setup)["SPF"] is Status.OK


def test_strict_dkim_alignment_needs_the_same_domain(key: DkimKey) -> None:
    setup = Setup(DOMAIN, "smtp", "127.0.0.1", ("digest", f"mail.{DOMAIN}", key.public_record()))
    zone = good_smtp_zone(key)
    zone[f"digest._domainkey.mail.{DOMAIN}"] = [("TXT", key.public_record())]
    zone[f"_dmarc.{DOMAIN}"] = [("TXT", "v=DMARC1; p=reject; adkim=s")]
    with dns_server(zone) as (server, _resolver):
        report = check(setup, server)
    spf, dkim, dmarc = report.findings
    assert spf.status is Status.UNKNOWN  # a local relay: its public address is not known
    assert dkim.status is Status.OK  # relaxed-aligned (a subdomain), but the policy is strict
    assert dmarc.status is Status.FAIL and "neither an aligned DKIM" in dmarc.says
    zone[f"_dmarc.{DOMAIN}"] = [("TXT", "v=DMARC1; p=reject")]
    with dns_server(zone) as (server, _resolver):
        assert check(setup, server).findings[-1].status is Status.OK


def test_alignment() -> None:
    assert ar.aligned("example.org", "news.example.org")
    assert ar.aligned("Example.org.", "example.org")
    assert not ar.aligned("example.org", "example.net")
    assert not ar.aligned("badexample.org", "example.org")


# -- the command --------------------------------------------------------------------------


def digest_check(
    project: Project, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "digest", "--config", str(project.write()), "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_command_reports_and_says_what_to_publish(
    project: Project, cli_env: dict[str, str], tmp_path: Path
) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["digest"]["from"] = f"The Weekly Harbour <digest@{DOMAIN}>"
    key_path = tmp_path / "dkim.pem"
    key = make_key(tmp_path, "ed25519")
    (tmp_path / "ed25519.pem").rename(key_path)
    project.data["delivery"] = {
        "backend": "smtp",
        "smtp": {"host": f"mail.{DOMAIN}", "dkim_key_file": str(key_path),
                 "dkim_selector": "digest", "dkim_domain": DOMAIN},
    }  # fmt: skip
    zone = good_smtp_zone(key, **{f"_dmarc.{DOMAIN}": None})
    with dns_server(zone) as (server, _resolver):
        shown = digest_check(project, cli_env, "--deliverability", "--dns-server", server)
        as_json = digest_check(
            project, cli_env, "--deliverability", "--dns-server", server, "--json"
        )
    assert shown.returncode == 1, shown.stderr
    assert "✓ DKIM (digest._domainkey.harbour.example.org): matches" in shown.stdout
    assert "✗ DMARC (_dmarc.harbour.example.org): no DMARC record" in shown.stdout
    assert (
        'publish: _dmarc.harbour.example.org TXT "v=DMARC1; p=none; '
        'rua=mailto:dmarc-reports@harbour.example.org"' in shown.stdout
    )
    data = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and data["ok"] is False and data["domain"] == DOMAIN
    assert [c["status"] for c in data["checks"]] == ["ok", "ok", "fail"]
    assert data["checks"][1]["found"] == key.public_record()

    zone[f"_dmarc.{DOMAIN}"] = [("TXT", "v=DMARC1; p=none")]
    with dns_server(zone) as (server, _resolver):
        fixed = digest_check(project, cli_env, "--deliverability", "--dns-server", server)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr

    wrong = digest_check(project, cli_env, "--deliverability", "--dns-server", "dns.example")
    assert wrong.returncode == 2 and "give an IP address" in wrong.stderr
    alone = digest_check(project, cli_env, "--json")
    assert alone.returncode == 2 and "go with --deliverability" in alone.stderr
