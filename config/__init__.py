"""tokenkeeper settings: one frozen object built from an environ mapping."""

from config.local import local_environ
from config.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings", "local_environ"]
