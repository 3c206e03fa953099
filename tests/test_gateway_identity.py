"""Identity: API keys, the safety identifier, the end user of a request, the server secret."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from seawall.errors import ConfigurationError, InvalidRequestError
from seawall.gateway import identity
from seawall.gateway.identity import (
    MAX_ID_LENGTH,
    SECRET_BYTES,
    EndUser,
    generate_api_key,
    hash_api_key,
    load_or_create_secret,
    resolve_end_user,
    safety_identifier,
    upstream_body,
    verify_api_key,
)

SECRET = bytes(range(32))

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="file modes are POSIX")


# ----------------------------------------------------------------- API keys


def test_generated_keys_have_the_prefix_and_256_bits_of_entropy() -> None:
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("sw-")
        body = key.removeprefix("sw-")
        assert len(body) >= 43  # 32 bytes, base64url without padding
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert generate_api_key(prefix="tenant_").startswith("tenant_")


def test_key_hash_is_sha256_with_a_scheme_tag_and_never_holds_the_key() -> None:
    key = generate_api_key()
    stored = hash_api_key(key)
    assert stored == "sha256$" + hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored and key.removeprefix("sw-") not in stored
    assert hash_api_key(key) == stored  # deterministic: the store can look keys up by digest


def test_verify_accepts_the_right_key_only() -> None:
    key = generate_api_key()
    stored = hash_api_key(key)
    assert verify_api_key(key, stored) is True
    assert verify_api_key(generate_api_key(), stored) is False
    assert verify_api_key(key[:-1], stored) is False
    assert verify_api_key(key + "x", stored) is False
    assert verify_api_key("", stored) is False
    assert verify_api_key(stored, stored) is False  # the digest itself is not a key


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not-a-hash",
        "md5$" + hashlib.md5(b"k").hexdigest(),
        "sha256$" + "0" * 63,
        "sha256$" + "Z" * 64,
        hashlib.sha256(b"k").hexdigest(),  # untagged
    ],
)
def test_verify_refuses_a_malformed_stored_hash_without_raising(stored: str) -> None:
    assert verify_api_key("k", stored) is False


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(identity.hmac, "compare_digest", spy)
    key = generate_api_key()
    assert verify_api_key(key, hash_api_key(key)) is True
    assert verify_api_key("sw-wrong", hash_api_key(key)) is False
    assert len(calls) == 2
    assert calls[0][0] == calls[0][1] == hashlib.sha256(key.encode()).hexdigest().encode()


def test_hash_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError):
        hash_api_key("")


# ----------------------------------------------------------------- safety identifier


def _expected(secret: bytes, tenant: str, user: str) -> str:
    t, u = tenant.encode(), user.encode()
    message = len(t).to_bytes(8, "big") + t + len(u).to_bytes(8, "big") + u
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def test_safety_identifier_known_answer() -> None:
    got = safety_identifier(SECRET, "acme", "alice@example.com")
    assert got == _expected(SECRET, "acme", "alice@example.com")
    assert len(got) == 64 and got == got.lower()
    assert "alice" not in got
    # Non-ASCII ids are encoded as UTF-8 and counted in bytes.
    assert safety_identifier(SECRET, "ç", "用户") == _expected(SECRET, "ç", "用户")


def test_safety_identifier_is_not_ambiguous_at_the_boundary() -> None:
    assert safety_identifier(SECRET, "ab", "c") != safety_identifier(SECRET, "a", "bc")
    assert safety_identifier(SECRET, "", "abc") != safety_identifier(SECRET, "abc", "")
    # A separator-based encoding would collide here; the length prefix does not.
    assert safety_identifier(SECRET, "a\x00b", "c") != safety_identifier(SECRET, "a", "b\x00c")


def test_safety_identifier_depends_on_secret_tenant_and_user() -> None:
    base = safety_identifier(SECRET, "acme", "alice")
    assert safety_identifier(bytes(32), "acme", "alice") != base
    assert safety_identifier(SECRET, "globex", "alice") != base
    assert safety_identifier(SECRET, "acme", "bob") != base
    assert safety_identifier(SECRET, "acme", "alice") == base


def test_safety_identifier_refuses_a_short_secret() -> None:
    with pytest.raises(ConfigurationError):
        safety_identifier(b"short", "acme", "alice")


# ----------------------------------------------------------------- end user


def test_trusted_header_wins_when_configured() -> None:
    body = {"user": "body-user", "safety_identifier": "body-sid"}
    user = resolve_end_user(body, {"X-App-User": "header-user"}, "x-app-user")
    assert user == EndUser("header-user", anonymous=False, source="header")


def test_trusted_header_is_ignored_when_not_configured() -> None:
    body = {"user": "body-user"}
    user = resolve_end_user(body, {"x-app-user": "spoofed"}, None)
    assert (user.id, user.source) == ("body-user", "user")


def test_configured_header_absent_falls_back_to_the_body() -> None:
    user = resolve_end_user({"user": "u1"}, {}, "x-app-user")
    assert (user.id, user.source, user.anonymous) == ("u1", "user", False)


def test_safety_identifier_beats_user_in_the_body() -> None:
    user = resolve_end_user({"user": "u1", "safety_identifier": "sid-1"}, {}, None)
    assert (user.id, user.source) == ("sid-1", "safety_identifier")


def test_null_fields_count_as_absent() -> None:
    user = resolve_end_user({"safety_identifier": None, "user": "u2"}, {}, None)
    assert (user.id, user.source) == ("u2", "user")


def test_anonymous_traffic_gets_a_fresh_random_session() -> None:
    first = resolve_end_user({}, {}, "x-app-user")
    second = resolve_end_user({}, {}, "x-app-user")
    assert first.anonymous and first.source == "session" and first.new_session
    assert first.id != second.id
    assert len(first.id) >= 20


def test_anonymous_session_from_header_or_cookie() -> None:
    from_header = resolve_end_user({}, {"X-Seawall-Session": "sess-123"}, None)
    assert from_header == EndUser("sess-123", anonymous=True, source="session", new_session=False)
    from_cookie = resolve_end_user({}, {"cookie": "theme=dark; seawall_session=sess-456"}, None)
    assert (from_cookie.id, from_cookie.anonymous, from_cookie.new_session) == ("sess-456", True, False)
    # The header beats the cookie; custom names work; a known user is never anonymous.
    both = resolve_end_user({}, {"x-seawall-session": "h", "cookie": "seawall_session=c"}, None)
    assert both.id == "h"
    custom = resolve_end_user({}, {"cookie": "sid=abc"}, None, session_cookie="sid")
    assert custom.id == "abc"
    known = resolve_end_user({"user": "u"}, {"x-seawall-session": "h"}, None)
    assert not known.anonymous


def test_session_sources_can_be_switched_off() -> None:
    user = resolve_end_user(
        {},
        {"x-seawall-session": "h", "cookie": "seawall_session=c"},
        None,
        session_header=None,
        session_cookie=None,
    )
    assert user.new_session and user.id not in ("h", "c")


def test_end_user_repr_leaves_the_raw_id_out() -> None:
    user = resolve_end_user({"user": "alice@example.com"}, {}, None)
    assert "alice" not in repr(user)


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"user": 42}, "user", "must be a string"),
        ({"user": ["a"]}, "user", "must be a string"),
        ({"user": ""}, "user", "must not be empty"),
        ({"user": "x" * (MAX_ID_LENGTH + 1)}, "user", f"the limit is {MAX_ID_LENGTH}"),
        ({"user": "alice\nbob"}, "user", "control characters"),
        ({"user": "alice\x00"}, "user", "control characters"),
        ({"safety_identifier": {"id": 1}}, "safety_identifier", "must be a string"),
        ({"safety_identifier": "a\u2028b"}, "safety_identifier", "control characters"),
    ],
)
def test_invalid_body_ids_are_400_naming_the_field(body: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        resolve_end_user(body, {}, None)
    error = caught.value
    assert error.status_code == 400
    assert error.error_type == "invalid_request_error"
    assert error.param == param
    assert f"'{param}'" in error.message and fragment in error.message


def test_an_id_at_the_length_limit_is_accepted() -> None:
    assert resolve_end_user({"user": "x" * MAX_ID_LENGTH}, {}, None).id == "x" * MAX_ID_LENGTH


@pytest.mark.parametrize(
    ("headers", "trusted", "fragment"),
    [
        ({"x-app-user": "a\tb"}, "x-app-user", "the x-app-user header"),
        ({"x-app-user": "y" * 300}, "x-app-user", "the x-app-user header"),
        ({"x-seawall-session": "s\x1b[31m"}, None, "the x-seawall-session header"),
        ({"cookie": 'seawall_session="a\\012b"'}, None, "the seawall_session cookie"),
    ],
)
def test_invalid_header_ids_are_400_naming_the_header(
    headers: dict[str, str], trusted: str | None, fragment: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        resolve_end_user({}, headers, trusted)
    assert caught.value.status_code == 400
    assert fragment in caught.value.message


# ----------------------------------------------------------------- upstream body


def test_upstream_body_replaces_the_client_ids_with_the_digest() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "user": "alice@example.com",
        "safety_identifier": "alice-raw",
    }
    user = resolve_end_user(body, {}, None)
    digest = safety_identifier(SECRET, "acme", user.id)
    sent = upstream_body(body, digest)
    assert sent["safety_identifier"] == digest == _expected(SECRET, "acme", "alice-raw")
    assert "user" not in sent
    serialised = repr(sent)
    assert "alice" not in serialised
    assert sent["messages"] == body["messages"] and sent["model"] == "m"
    # The caller's body is left alone.
    assert body["user"] == "alice@example.com" and body["safety_identifier"] == "alice-raw"


def test_upstream_body_sets_the_digest_when_the_client_sent_none() -> None:
    digest = safety_identifier(SECRET, "acme", "sess")
    assert upstream_body({"model": "m"}, digest) == {"model": "m", "safety_identifier": digest}


@pytest.mark.parametrize("raw", ["alice", "A" * 64, "0" * 63, ""])
def test_upstream_body_refuses_anything_but_a_digest(raw: str) -> None:
    with pytest.raises(ValueError):
        upstream_body({"model": "m"}, raw)


# ----------------------------------------------------------------- server secret


@posix_only
def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secret.bin"
    first = load_or_create_secret(path)
    assert len(first) == SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes() == first
    assert load_or_create_secret(path) == first
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


@posix_only
def test_secret_creation_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_secret(tmp_path / "s")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o600


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_with_broader_permissions_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    path.write_bytes(os.urandom(SECRET_BYTES))
    path.chmod(mode)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_or_create_secret(path)


@posix_only
def test_an_existing_secret_is_read_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    assert load_or_create_secret(path) == SECRET
    path.chmod(0o400)
    assert load_or_create_secret(path) == SECRET


@posix_only
@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_secret_of_the_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"k" * size)
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match=f"exactly {SECRET_BYTES}"):
        load_or_create_secret(path)


def test_secret_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_or_create_secret(tmp_path)


@posix_only
def test_the_ui_key_is_kept_the_same_way_at_the_size_earlier_versions_wrote(tmp_path: Path) -> None:
    from seawall.ui.auth import SECRET_BYTES as UI_SECRET_BYTES

    earlier = tmp_path / "ui-secret"
    earlier.write_bytes(os.urandom(32).hex().encode("ascii"))  # what the UI's own copy used to write
    earlier.chmod(0o600)
    assert load_or_create_secret(earlier, size=UI_SECRET_BYTES) == earlier.read_bytes()

    made = tmp_path / "keys" / "ui-secret"
    key = load_or_create_secret(made, size=UI_SECRET_BYTES)
    assert len(key) == UI_SECRET_BYTES and made.read_bytes() == key
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert list(made.parent.iterdir()) == [made]  # written aside, then linked into place
