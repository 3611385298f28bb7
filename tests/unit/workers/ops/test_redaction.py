"""Task arguments as shown in Flower and logs keep names and drop secrets."""

from __future__ import annotations

from workers.ops.redaction import HIDDEN, args_repr


def test_a_spec_is_shown_without_its_secrets() -> None:
    """client_secret, refresh_token and any unknown field are hidden; the name stays readable."""
    spec = {
        "name": "gdrive",
        "grant_type": "refresh_token",
        "client_secret": "cs-1",
        "refresh_token": "rt-1",
        "client_secrte": "typo-secret",
        "extra_token_params": {"audience": "x"},
    }
    argsrepr, kwargsrepr = args_repr([spec], {"planned_at": 12.5, "code": "abc"})
    assert "gdrive" in argsrepr and "refresh_token" in argsrepr
    for secret in ("cs-1", "rt-1", "typo-secret", "abc"):
        assert secret not in argsrepr + kwargsrepr
    assert HIDDEN in argsrepr and "12.5" in kwargsrepr


def test_changes_for_an_update_are_redacted_too() -> None:
    """update_integration(name, changes) shows the name and hides a new secret."""
    argsrepr, _ = args_repr(["gdrive", {"client_secret": "new-secret", "scopes": "a b"}], {})
    assert "gdrive" in argsrepr and "a b" in argsrepr and "new-secret" not in argsrepr
