"""Writes constraints.txt: the exact versions of the service's dependencies, as installed in the venv.

The service image (Dockerfile) and scripts/up, scripts/test (through scripts/_venv.sh) install with
``-c constraints.txt``, so every machine runs the versions the tests passed on. Only the service's
dependencies are pinned (pyproject's dependencies and the embedded-redis and otel extras, with everything
they pull in), never tokenkeeper itself nor the test tools. After changing a dependency or upgrading one:

    .venv/bin/python scripts/lock.py
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
# Locked with the service: the fallback Redis server binary standalone can run, and the traces' SDK.
LOCKED_EXTRAS = ("embedded-redis", "otel")
HEADER = """\
# The service's dependencies at the versions the tests passed on; written by scripts/lock.py.
# Installed with `pip install -c constraints.txt` by the Dockerfile and scripts/_venv.sh.
"""


def service_requirements() -> list[Requirement]:
    """pyproject's dependencies and the locked extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        raw += project["optional-dependencies"][extra]
    return [Requirement(line) for line in raw]


def installed_closure(roots: list[Requirement]) -> dict[str, str]:
    """Each distribution the roots need on this platform, by normalised name, at its installed version."""
    versions: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(root, frozenset(root.extras)) for root in roots]
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            raise SystemExit(f"{requirement.name} is not installed: install the service first") from None
        versions[name] = dist.version
        for line in dist.requires or []:
            needed = Requirement(line)
            wanted = needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in ("", *extras))
            if wanted:
                pending.append((needed, frozenset(needed.extras)))
    return versions


def render(versions: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={versions[name]}\n" for name in sorted(versions))


def read_lock(text: str) -> dict[str, str]:
    """constraints.txt's pins, by normalised name."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def main() -> int:
    LOCK.write_text(render(installed_closure(service_requirements())))
    print(f"wrote {LOCK.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
