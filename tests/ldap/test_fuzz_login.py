"""Property-based fuzzing of the login form against the real directory (tests/fixtures/slapd.py).

Whatever the username and password, through the console's real /login/ view: the answer is never a 500;
a person is signed in only with a directory uid, exactly (surrounding spaces aside: the form trims them
before anything else sees the name), and its real password; a refused attempt writes no user row and
shows a stable code. The examples cover what tests/ldap/test_ldap_login.py does not: LDAP filter and DN
syntax in the name (`*`, `)(`, `\\`, `,`, `=`, `+`, a leading `#`, NUL), very long names, names the
directory matches by its own rules (case, fullwidth letters) but which are not the uid, and empty or blank
passwords (a simple bind with an empty password is an unauthenticated bind, which directories accept).
Lockout (django-axes, docs/decisions/0003-lockout-by-username.md) must hold for directory accounts too,
and a variant of a locked name must not sign its owner in.

Each example runs in a savepoint that is rolled back, so user rows, audit events and axes' failure counts
start empty every time; slapd is the session's (started once).
"""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate
from django.db import transaction
from django.test import Client, RequestFactory
from hypothesis import example, given
from hypothesis import strategies as st

from mgmt.accounts.models import Role, User
from tests.fixtures.fuzzing import fuzz
from tests.fixtures.personas import make_user
from tests.fixtures.slapd import PEOPLE_ENTRIES, Directory

from .test_ldap_login import error_code, sign_in

pytestmark = pytest.mark.django_db

UIDS = tuple(PEOPLE_ENTRIES)
RITA = "rita.rad"
RITA_PASSWORD = PEOPLE_ENTRIES[RITA][2]
# Directory people the mapping refuses even with the right password, and the code they see.
REFUSED_WITH_RIGHT_PASSWORD = {"otto.outside": "auth.directory_group", "nina.nodept": "auth.directory_no_department"}
LDAP_SYNTAX = "*()\\|&!=,+#<>;\"'/ \x00\t"
FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ."}


def _variant(uid: str, how: str, extra: str) -> str:
    return {
        "exact": uid,
        "upper": uid.upper(),
        "title": uid.title(),
        "fullwidth": "".join(FULLWIDTH.get(c, c) for c in uid),
        "dotless": uid.replace("i", "\u0131"),
        "combining": uid[:1] + "\u0301" + uid[1:],
        "prefix": extra + uid,
        "suffix": uid + extra,
        "wildcard": uid[:-2] + "*",
        "filter": f"{uid}){extra}(uid=*",
        "dn": f"uid={uid},ou=people{extra}",
        "long": uid + "x" * 200,
    }[how]


HOWS = ("exact", "upper", "title", "fullwidth", "dotless", "combining", "prefix", "suffix", "wildcard", "filter", "dn")


@st.composite
def attempts(draw: st.DrawFn) -> tuple[str, str]:
    uid = draw(st.sampled_from(UIDS))
    username = draw(
        st.one_of(
            st.builds(_variant, st.just(uid), st.sampled_from(HOWS), st.text(st.sampled_from(LDAP_SYNTAX), max_size=4)),
            st.text(st.sampled_from(LDAP_SYNTAX + "ritad.xX"), max_size=30),
            st.text(max_size=160),
        )
    )
    password = draw(
        st.one_of(
            st.just(PEOPLE_ENTRIES[uid][2]),
            st.sampled_from(["", " ", "\t \n", "*", PEOPLE_ENTRIES[uid][2] + "x", PEOPLE_ENTRIES[uid][2][:-1]]),
            st.sampled_from([entry[2] for entry in PEOPLE_ENTRIES.values()]),
            st.text(max_size=40),
        )
    )
    return username, password


def _malformed(username: str, password: str) -> bool:
    """What LoginForm refuses before any backend runs (it trims the username, never the password)."""
    name = username.strip()
    return not name or not password or len(name) > 150 or len(password) > 256 or "\x00" in username + password


def check_attempt(username: str, password: str) -> None:
    before = set(User.objects.values_list("username", flat=True))
    client = Client()
    response = sign_in(client, username, password)

    assert response.status_code != 500
    after = set(User.objects.values_list("username", flat=True))
    name = username.strip()
    right = name in PEOPLE_ENTRIES and not _malformed(username, password) and password == PEOPLE_ENTRIES[name][2]
    if right and name not in REFUSED_WITH_RIGHT_PASSWORD:
        assert response.status_code == 302, (username, password, error_code(response))
        assert after == before | {name}
        assert client.session["_auth_user_id"] == str(User.objects.get(username=name).pk)
        return
    assert "_auth_user_id" not in client.session, (username, password)
    assert after == before, (username, password, after - before)
    if _malformed(username, password):
        assert (response.status_code, error_code(response)) == (400, "auth.malformed")
    elif right:
        assert (response.status_code, error_code(response)) == (403, REFUSED_WITH_RIGHT_PASSWORD[name])
    else:
        assert (response.status_code, error_code(response)) == (401, "auth.bad_credentials"), (username, password)


@fuzz(150)
@given(attempt=attempts())
# The classics, each with rita.rad's real password: filter and DN injection never finds or binds her entry.
@example(attempt=("*", RITA_PASSWORD))
@example(attempt=(")(", RITA_PASSWORD))
@example(attempt=("\\", RITA_PASSWORD))
@example(attempt=("*)(uid=*", RITA_PASSWORD))
@example(attempt=("admin)(|(uid=*", RITA_PASSWORD))
@example(attempt=("rita.rad)(|(uid=*", RITA_PASSWORD))
@example(attempt=("rita.r*", RITA_PASSWORD))
@example(attempt=("rita.rad\\2a", RITA_PASSWORD))
@example(attempt=("rita.rad\x00", RITA_PASSWORD))
@example(attempt=("uid=rita.rad,ou=people,dc=hospital,dc=test", RITA_PASSWORD))
@example(attempt=("rita.rad,ou=people", RITA_PASSWORD))
@example(attempt=("rita.rad+cn=Rita Radiographer", RITA_PASSWORD))
@example(attempt=("#rita.rad", RITA_PASSWORD))
@example(attempt=("=rita.rad", RITA_PASSWORD))
@example(attempt=("r" * 151, RITA_PASSWORD))
@example(attempt=("rita.rad" + " " * 200, RITA_PASSWORD))
# Names the directory matches by its own rules but which are not the uid.
@example(attempt=("RITA.RAD", RITA_PASSWORD))
@example(attempt=("Rita.Rad", RITA_PASSWORD))
@example(attempt=("ｒｉｔａ.rad", RITA_PASSWORD))
@example(attempt=("OTTO.OUTSIDE", PEOPLE_ENTRIES["otto.outside"][2]))  # must not reveal the password was right
@example(attempt=("ｎｉｎａ.nodept", PEOPLE_ENTRIES["nina.nodept"][2]))
# Surrounding spaces are trimmed by the form: the exact uid, then.
@example(attempt=(" rita.rad ", RITA_PASSWORD))
# Empty (an unauthenticated bind) and blank passwords, a wrong one, another person's, the right one plus a space.
@example(attempt=(RITA, ""))
@example(attempt=(RITA, "   "))
@example(attempt=(RITA, "\t\n"))
@example(attempt=("*", ""))
@example(attempt=(RITA, "not rita's password"))
@example(attempt=(RITA, PEOPLE_ENTRIES["eric.er"][2]))
@example(attempt=(RITA, "*"))
@example(attempt=(RITA, RITA_PASSWORD + " "))
@example(attempt=(RITA, " " + RITA_PASSWORD))
@example(attempt=(RITA, RITA_PASSWORD))
@example(attempt=("otto.outside", PEOPLE_ENTRIES["otto.outside"][2]))
def test_login_form_cannot_be_abused_against_the_directory(ldap_directory: Directory, attempt) -> None:
    with transaction.atomic():
        check_attempt(*attempt)
        transaction.set_rollback(True)


def test_empty_password_never_reaches_the_directory_as_a_bind(ldap_directory: Directory) -> None:
    """Below the form too: the directory backend refuses an empty password without binding."""
    request = RequestFactory().post("/login/")
    assert authenticate(request, username=RITA, password="") is None
    assert authenticate(request, username=RITA, password=None) is None
    assert not User.objects.filter(username=RITA).exists()


@pytest.mark.parametrize("variant", ["LENA.LOCAL", "Lena.Local", "ｌｅｎａ.local", "ｌｅｎａ．ｌｏｃａｌ"])
def test_lookalike_of_a_local_account_is_not_sent_to_the_directory(
    ldap_directory: Directory, personas, variant
) -> None:
    """lena.local is local; her directory namesake (an admin there) cannot get in under a lookalike name."""
    make_user("lena.local", Role.STAFF, personas.radiology)
    before = User.objects.count()

    response = sign_in(Client(), variant, ldap_directory.password("lena.local"))

    assert (response.status_code, error_code(response)) == (401, "auth.bad_credentials")
    assert User.objects.count() == before
    assert not User.objects.filter(source="ldap").exists()


def test_lockout_holds_for_directory_accounts_and_their_variants(ldap_directory: Directory) -> None:
    password = ldap_directory.password(RITA)
    codes = [error_code(sign_in(Client(), RITA, "wrong password")) for _ in range(5)]
    assert codes == ["auth.bad_credentials"] * 4 + ["auth.locked"]  # the fifth failure locks

    client = Client()
    response = sign_in(client, RITA, password)
    assert (response.status_code, error_code(response)) == (429, "auth.locked")
    assert "_auth_user_id" not in client.session
    # The locked account is not reachable under another spelling of its name, even with the right password.
    for variant in (" rita.rad", "RITA.RAD", "Rita.rad", "ｒｉｔａ.rad", "rita.rad\t"):
        client = Client()
        response = sign_in(client, variant, password)
        assert response.status_code in (401, 429), variant
        assert error_code(response) in ("auth.bad_credentials", "auth.locked"), variant
        assert "_auth_user_id" not in client.session, variant
    assert not User.objects.exists()
    # Another directory account is not affected by rita's lock.
    assert sign_in(Client(), "eric.er", ldap_directory.password("eric.er")).status_code == 302


def test_password_is_not_trimmed(ldap_directory: Directory) -> None:
    """A space at either end is part of the password (the form used to trim it: the real one plus a space
    signed in, and a directory password ending in a space never could)."""
    response = sign_in(Client(), RITA, ldap_directory.password(RITA) + " ")
    assert (response.status_code, error_code(response)) == (401, "auth.bad_credentials")
