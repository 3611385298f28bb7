"""Settings come from an environ mapping, report every problem at once and hide secrets."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from config import Settings, SettingsError, load_settings


def test_defaults_follow_the_contract() -> None:
    """With nothing set, Redis, broker, queue, prefix and URLs take the contract's defaults."""
    settings = load_settings({})
    assert settings.redis_url == "redis://127.0.0.1:6380/0"
    assert settings.broker_url == settings.redis_url
    assert settings.queue == "tokenkeeper"
    assert settings.key_prefix == "tokenkeeper:"
    assert settings.public_url == "http://127.0.0.1:5000"
    assert settings.bind == "127.0.0.1:5000"
    assert settings.callback_url == "http://127.0.0.1:5000/oauth/callback"


def test_broker_and_result_backend_default_to_the_redis_url() -> None:
    """TOKENKEEPER_BROKER_URL defaults to the Redis URL given, not to the built-in one."""
    settings = load_settings({"TOKENKEEPER_REDIS_URL": "redis://10.0.0.5:6380/2"})
    assert settings.broker_url == "redis://10.0.0.5:6380/2"
    assert settings.result_backend == "redis://10.0.0.5:6380/2"
    explicit = load_settings({"TOKENKEEPER_REDIS_URL": "redis://a/0", "TOKENKEEPER_BROKER_URL": "amqp://b//"})
    assert explicit.broker_url == "amqp://b//"


def test_every_bad_variable_is_reported_at_once() -> None:
    """One error lists each invalid variable by name, so an operator fixes them in one go."""
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "TOKENKEEPER_REDIS_URL": "http://nope",
                "TOKENKEEPER_LOCK_TTL": "-3",
                "TOKENKEEPER_PUBLIC_URL": "ftp://x",
                "TOKENKEEPER_TYPO": "1",
            }
        )
    message = str(caught.value)
    for variable in ("TOKENKEEPER_REDIS_URL", "TOKENKEEPER_LOCK_TTL", "TOKENKEEPER_PUBLIC_URL", "TOKENKEEPER_TYPO"):
        assert variable in message


def test_secret_keys_are_hidden_from_repr_and_errors() -> None:
    """Fernet keys never show in repr, and a malformed key is reported without echoing it."""
    key = Fernet.generate_key().decode()
    settings = load_settings({"TOKENKEEPER_SECRET_KEY": f"{key}, {Fernet.generate_key().decode()}"})
    assert settings.secret_keys[0] == key and len(settings.secret_keys) == 2
    assert key not in repr(settings)
    with pytest.raises(SettingsError) as caught:
        load_settings({"TOKENKEEPER_SECRET_KEY": "not-a-real-key-value"})
    assert "not-a-real-key-value" not in str(caught.value)
    assert "TOKENKEEPER_SECRET_KEY" in str(caught.value)


def test_visibility_timeout_must_outlast_the_horizon() -> None:
    """A visibility timeout shorter than countdowns would make Redis redeliver waiting tasks."""
    with pytest.raises(SettingsError, match="TOKENKEEPER_VISIBILITY_TIMEOUT"):
        load_settings({"TOKENKEEPER_SCHEDULE_HORIZON": "100", "TOKENKEEPER_VISIBILITY_TIMEOUT": "200"})


def test_settings_are_frozen() -> None:
    """Nothing can change settings after they are built."""
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.queue = "other"  # type: ignore[misc]


def test_our_config_package_is_the_one_imported() -> None:
    """`config` is a generic name; the repository's own must win on sys.path."""
    import config

    assert config.load_settings is load_settings
    assert config.__file__.endswith("config/__init__.py")


def test_the_lock_outlives_a_token_request() -> None:
    """A lock shorter than the HTTP timeouts would let a second refresh start mid-request."""
    with pytest.raises(SettingsError, match="TOKENKEEPER_LOCK_TTL"):
        load_settings({"TOKENKEEPER_LOCK_TTL": "10", "TOKENKEEPER_HTTP_READ_TIMEOUT": "20"})


def test_the_lock_outlives_a_token_request_with_a_margin() -> None:
    """The lock must outlast the request's deadline by a second, for the work before and after it."""
    timeouts = {"TOKENKEEPER_HTTP_CONNECT_TIMEOUT": "1", "TOKENKEEPER_HTTP_READ_TIMEOUT": "1.5"}
    with pytest.raises(SettingsError, match=r"TOKENKEEPER_LOCK_TTL.*1 s"):
        load_settings({**timeouts, "TOKENKEEPER_LOCK_TTL": "3"})
    assert load_settings({**timeouts, "TOKENKEEPER_LOCK_TTL": "3.5"}).lock_ttl == 3.5


def test_every_setting_is_documented() -> None:
    """Each TOKENKEEPER_* variable appears in docs/settings.md's settings table."""
    import dataclasses
    from pathlib import Path

    from config.settings import variable_name

    settings_page = (Path(__file__).resolve().parents[3] / "docs" / "settings.md").read_text()
    names = [variable_name(f.name) for f in dataclasses.fields(Settings)]
    missing = [name for name in names if f"`{name}`" not in settings_page]
    assert missing == []


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "0", "soon", ""])
def test_numbers_must_be_finite_and_positive(raw: str) -> None:
    """NaN, infinity, negatives, zero and words are refused for a positive setting."""
    with pytest.raises(SettingsError, match="TOKENKEEPER_LOCK_TTL"):
        load_settings({"TOKENKEEPER_LOCK_TTL": raw})


def test_trust_switches_default_to_the_safe_side() -> None:
    """Private networks, plain-text secrets and an anonymous /metrics are all off unless an operator turns them on."""
    settings = load_settings({})
    assert (settings.allow_private_networks, settings.accept_plain_secrets, settings.metrics_public) == (
        False,
        False,
        False,
    )
    assert settings.authorize_link_ttl == 86400
    turned_on = load_settings({"TOKENKEEPER_ALLOW_PRIVATE_NETWORKS": "true", "TOKENKEEPER_METRICS_PUBLIC": "1"})
    assert turned_on.allow_private_networks and turned_on.metrics_public


def test_a_switch_that_is_neither_true_nor_false_is_named() -> None:
    """A flag set to something else than true/false is an error naming the variable."""
    with pytest.raises(SettingsError, match="TOKENKEEPER_ACCEPT_PLAIN_SECRETS: must be true or false"):
        load_settings({"TOKENKEEPER_ACCEPT_PLAIN_SECRETS": "maybe"})


def test_passwords_in_urls_are_hidden_from_repr() -> None:
    """A Redis, broker or result-backend URL shows in repr with its password masked, the rest kept."""
    settings = load_settings(
        {
            "TOKENKEEPER_REDIS_URL": "redis://tokenkeeper:s3cret-redis@127.0.0.1:6380/0",
            "TOKENKEEPER_BROKER_URL": "amqp://guest:s3cret-amqp@mq:5672//",
            "TOKENKEEPER_RESULT_BACKEND": "redis://:s3cret-backend@127.0.0.1:6380/1",
            "TOKENKEEPER_WEBHOOK_URL": "https://hooks.example/x",
            "TOKENKEEPER_WEBHOOK_SECRET": "s3cret-hook",
        }
    )
    shown = repr(settings)
    assert "s3cret" not in shown
    assert "redis://tokenkeeper:***@127.0.0.1:6380/0" in shown
    assert "amqp://guest:***@mq:5672//" in shown


def test_every_sentinel_password_is_hidden_from_repr() -> None:
    """Each URL of a sentinel list is masked on its own."""
    settings = load_settings(
        {
            "TOKENKEEPER_REDIS_URL": "sentinel://:pw-one@h1:26379;sentinel://:pw-two@h2:26379/0",
            "TOKENKEEPER_REDIS_SENTINEL_MASTER": "main",
        }
    )
    assert "pw-" not in repr(settings)
    assert "sentinel://:***@h1:26379;sentinel://:***@h2:26379/0" in repr(settings)


def test_sentinel_urls_need_the_master_name() -> None:
    """A sentinel:// URL without TOKENKEEPER_REDIS_SENTINEL_MASTER, or the reverse, is a settings error."""
    with pytest.raises(SettingsError, match="TOKENKEEPER_REDIS_SENTINEL_MASTER: required"):
        load_settings({"TOKENKEEPER_REDIS_URL": "sentinel://127.0.0.1:26379/0"})
    with pytest.raises(SettingsError, match="must list the sentinels"):
        load_settings({"TOKENKEEPER_REDIS_SENTINEL_MASTER": "mymaster"})


def test_a_pinned_public_key_must_be_32_bytes_of_standard_base64() -> None:
    """TOKENKEEPER_PUBLIC_KEY keeps a 32-byte standard-base64 key and refuses anything else by name."""
    import base64

    key = base64.b64encode(bytes(range(32))).decode()
    assert load_settings({"TOKENKEEPER_PUBLIC_KEY": f" {key}\n"}).public_key == key
    assert load_settings({}).public_key == ""
    for bad in ("", "c2hvcnQ=", base64.urlsafe_b64encode(b"\xff" * 32).decode(), key[:-1]):
        with pytest.raises(SettingsError, match="TOKENKEEPER_PUBLIC_KEY: must be 32 bytes in standard base64"):
            load_settings({"TOKENKEEPER_PUBLIC_KEY": bad})
