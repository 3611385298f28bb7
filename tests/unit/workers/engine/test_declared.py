"""Digests of spec fields as given: equal values match, secrets are never readable, removals are seen."""

from __future__ import annotations

import hashlib

from workers.engine.declared import Digests, difference, legacy_given, to_prune


def test_fields_compare_by_keyed_digest_and_are_named_by_kind() -> None:
    digests = Digests(b"k" * 32)
    stored = digests.given({"name": "a", "client_id": "x", "client_secret": "s1", "scopes": "read", "pkce": True})
    wanted = digests.given({"name": "a", "client_id": "x", "client_secret": "s2", "scopes": "read write"})
    found = difference(stored, wanted)
    assert found.changed == ("scopes",) and found.secrets == ("client_secret",) and found.removed == ("pkce",)
    assert difference(stored, stored).empty
    assert "name" not in stored and digests.known(stored)


def test_a_digest_reveals_nothing_without_the_key_and_is_bound_to_its_place() -> None:
    one, other = Digests(b"1" * 32), Digests(b"2" * 32)
    assert one.of("a", "client_secret", "hunter2") != other.of("a", "client_secret", "hunter2")
    assert one.of("a", "client_secret", "hunter2") not in hashlib.sha256(b'"hunter2"').hexdigest()
    assert "hunter2" not in str(one.given({"name": "a", "client_secret": "hunter2"}))
    # The same value in another integration's field, or in a public field, is another digest: a digest
    # anyone can make (a client_id of their own) says nothing about someone's secret.
    assert one.of("a", "client_secret", "hunter2") != one.of("b", "client_secret", "hunter2")
    assert one.of("a", "client_secret", "hunter2") != one.of("a", "client_id", "hunter2")
    assert not other.known(one.given({"name": "a"})) and not other.known(None)


def test_an_update_changes_the_digests_it_names() -> None:
    digests = Digests(b"k" * 32)
    current = digests.given({"name": "a", "client_id": "x", "scopes": "read"})
    updated = digests.updated("a", current, {"scopes": None, "audience": "api"})
    assert updated == {
        "client_id": current["client_id"],
        "audience": digests.of("a", "audience", "api"),
        "_key": digests.key_id,
    }


def test_before_digests_the_stored_values_stand_in_and_a_refresh_token_counts_as_given() -> None:
    digests = Digests(b"k" * 32)
    wanted = {"name": "a", "client_id": "x", "client_secret": "s", "refresh_token": "from-the-file", "managed_by": "p"}
    stored = legacy_given(digests, {"client_id": "x"}, {"client_secret": "s", "refresh_token": "rotated"}, wanted)
    found = difference(stored, digests.given(wanted))
    assert found.changed == ("managed_by",) and not found.secrets and not found.removed


def test_only_the_projects_own_integrations_are_pruned() -> None:
    stored = [("a", {"managed_by": "p"}), ("b", {"managed_by": "q"}), ("c", {}), ("d", {"managed_by": "p"})]
    assert to_prune(stored, "p", {"d"}) == ["a"]


def test_a_change_of_provider_sends_the_whole_spec() -> None:
    """A new provider drops the preset's URLs unless the update names them: what the file names is all sent."""
    from workers.engine.declared import Difference
    from workers.engine.planning import changes

    data = {"name": "a", "provider": "github", "token_url": "https://mine/token", "client_id": "x"}
    assert changes(data, Difference(changed=("provider",))) == {
        "provider": "github",
        "token_url": "https://mine/token",
        "client_id": "x",
    }
    assert changes(data, Difference(changed=("client_id",), removed=("scopes",))) == {"client_id": "x", "scopes": None}


def test_the_stored_form_is_short_and_reads_back() -> None:
    from workers.engine.declared import decode, encode

    digests = Digests(b"k" * 32)
    given = digests.given({"name": "a", "client_id": "x", "client_secret": "s", "future_field": 1})
    raw = encode(given)
    assert decode(raw) == given
    assert len(raw) <= 60 and "client_id" not in raw and "(future_field)" in raw
    assert decode("") is None and decode("key;?bad") is None
