"""The Lua scripts of ``lua/``, read from the package; a script may be prefixed by libraries of shared functions."""

from __future__ import annotations

from importlib import resources


def lua(name: str, *libraries: str) -> str:
    """The text of ``lua/<name>.lua``, after the text of each of ``libraries`` (their local functions come first)."""
    folder = resources.files(__package__).joinpath("lua")
    return "\n".join(folder.joinpath(f"{part}.lua").read_text(encoding="utf-8") for part in (*libraries, name))
