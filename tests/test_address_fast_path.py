"""``addresses.normalize`` takes a quick way for plain ASCII addresses: it must always
agree with email-validator's way (hypothesis), and must really be taken."""

from __future__ import annotations

import email_validator
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from digest.errors import AddressError
from digest.mail import addresses
from digest.mail.addresses import Rules

LOOSE = Rules(utf8=True)

#: Characters that make addresses interesting: every class the patterns care about.
PIECES = st.sampled_from(
    [
        *"abcXYZ019_+-.@",
        *"!#$%&'*/=?^`{|}~\"()<>[]\\,;: \t",
        "é",
        "ß",
        "\u0130",
        "ﬁ",
        "\u200b",
        "xn--",
        "xn--bcher-kva",
        "postmaster",
        "Abuse",
        ".com",
        ".org",
        ".test",
        ".localhost",
        ".123",
        "localhost",
        "a" * 63,
        "b" * 64,
    ]
)
ADDRESSES = st.one_of(
    st.lists(PIECES, max_size=12).map("".join),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
        st.lists(PIECES, min_size=1, max_size=5).map("".join),
        st.lists(st.lists(PIECES, min_size=1, max_size=3).map("".join), min_size=1, max_size=3),
        st.sampled_from(["org", "COM", "de", "xn--p1ai", "123", "a", "test", "museum"]),
    ),
    st.text(max_size=40),
)


def slow(text: str, rules: Rules) -> str | AddressError:
    """email-validator's own way, as ``normalize`` took it before the quick way."""
    shown = text.strip()
    try:
        found = email_validator.validate_email(
            shown, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError:
        return AddressError()
    if found.ascii_email is None and not rules.utf8:
        return AddressError()
    return str(found.normalized)


def outcome(text: str, rules: Rules) -> str | AddressError:
    try:
        return addresses.normalize(text, rules)
    except AddressError as exc:
        return exc


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(ADDRESSES, st.sampled_from([addresses.ASCII_ONLY, LOOSE]))
@example("Ada@Example.ORG", addresses.ASCII_ONLY)
@example(" postmaster@example.org ", addresses.ASCII_ONLY)
@example("a@b-.example.org", addresses.ASCII_ONLY)
@example("a@example.localhost", addresses.ASCII_ONLY)
@example("a@xn--bcher-kva.example", addresses.ASCII_ONLY)
@example("a@example.123", addresses.ASCII_ONLY)
@example("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".org", LOOSE)
def test_the_quick_way_always_agrees_with_email_validator(text: str, rules: Rules) -> None:
    ours, theirs = outcome(text, rules), slow(text, rules)
    if isinstance(theirs, AddressError):
        assert isinstance(ours, AddressError), (text, ours)
    else:
        assert ours == theirs, (text, ours, theirs)


@settings(max_examples=500, deadline=None)
@given(ADDRESSES)
def test_the_quick_answer_is_email_validators_whenever_it_answers(text: str) -> None:
    quick = addresses._plain(text.strip())
    if quick is not None:
        assert quick == slow(text, addresses.ASCII_ONLY)


def test_plain_addresses_take_the_quick_way() -> None:
    assert addresses._plain("Ada.Lovelace+news@Example.ORG") == "Ada.Lovelace+news@example.org"
    assert addresses._plain("reader-1_x@mail.example.co.uk") == "reader-1_x@mail.example.co.uk"
    for unusual in ("postmaster@example.org", "zoë@example.org", "a@bücher.example", "a..b@x.org"):
        assert addresses._plain(unusual) is None
