"""The producer helper seals the secret fields of specs and changes before anything is published."""

from __future__ import annotations

import pytest
from celery import Celery
from cryptography.fernet import Fernet

from config import load_settings
from workers.celery_app import create_celery
from workers.crypto.sealing import Opener, public_key_for
from workers.errors import ConfigurationError
from workers.producer import seal_arguments


def test_specs_and_changes_are_sealed_to_the_settings_key_and_other_tasks_left_alone() -> None:
    """create's spec and update's changes get sealed secrets; other arguments and tasks pass unchanged."""
    key = Fernet.generate_key().decode()
    app = create_celery(load_settings({"TOKENKEEPER_SECRET_KEY": key}))
    spec = {"name": "svc", "client_secret": "CS-planted", "refresh_token": "RT-planted"}
    (sealed,) = seal_arguments(app, "tokenkeeper.create_integration", (spec,))
    assert "planted" not in repr(sealed) and sealed["name"] == "svc"
    assert Opener([key]).open_fields(sealed) == spec
    name, changes = seal_arguments(app, "tokenkeeper.update_integration", ("svc", {"client_secret": "CS-planted"}))
    assert name == "svc" and Opener([key]).open_fields(changes) == {"client_secret": "CS-planted"}
    assert seal_arguments(app, "tokenkeeper.refresh_integration", ("svc",)) == ("svc",)


def test_a_pinned_public_key_wins_and_a_foreign_app_needs_one() -> None:
    """public_key= seals to that key; an app not built by create_celery is told to pass one."""
    pinned = Fernet.generate_key().decode()
    app = create_celery(load_settings({"TOKENKEEPER_SECRET_KEY": Fernet.generate_key().decode()}))
    (sealed,) = seal_arguments(
        app, "tokenkeeper.create_integration", ({"client_secret": "s"},), public_key_for([pinned])
    )
    assert Opener([pinned]).open_fields(sealed) == {"client_secret": "s"}
    with pytest.raises(ConfigurationError, match="public_key="):
        seal_arguments(Celery("foreign"), "tokenkeeper.create_integration", ({"client_secret": "s"},))


def test_without_the_secret_key_producers_seal_to_the_pinned_setting_or_refuse() -> None:
    """Without the secret key TOKENKEEPER_PUBLIC_KEY is sealed to; with neither, sealing is refused saying why."""
    server = Fernet.generate_key().decode()
    app = create_celery(load_settings({"TOKENKEEPER_PUBLIC_KEY": public_key_for([server])}))
    (sealed,) = seal_arguments(app, "tokenkeeper.create_integration", ({"client_secret": "s"},))
    assert Opener([server]).open_fields(sealed) == {"client_secret": "s"}
    with pytest.raises(
        ConfigurationError,
        match="set TOKENKEEPER_PUBLIC_KEY to what `tokenkeeper public-key` "
        "prints on a worker host, or pass --public-key",
    ):
        seal_arguments(create_celery(load_settings({})), "tokenkeeper.create_integration", ({"client_secret": "s"},))
