"""Files of integrations for ``tokenkeeper plan`` / ``apply``: YAML or JSON, with secrets as references.

A file may live in a repository, so a secret field never holds plain text; it holds one of

    {"env": "NAME"}    the value of environment variable NAME where the command runs
    {"file": "PATH"}   the contents of PATH (one final newline dropped), relative to the file,
                       never outside the file's directory nor in a hidden one (``.git``, ``.ssh``):
                       a file from a pull request must not send the runner's credentials to a token
                       endpoint of its choosing
    {"sealed": "..."}  a sealed box (``tokenkeeper seal``), opened only by the workers

No ``TOKENKEEPER_*`` variable may be named (the service's own keys), and the plan shows every
reference with the endpoint it goes to, for the reviewer of a pull request.

YAML aliases, merge keys and duplicate keys are refused: each would let a reviewed line say one
thing while the file means another (or expand a few hundred bytes into gigabytes).

The shape::

    project: billing          # required: what `apply --prune` may delete
    integrations:             # a list of specs, or a mapping of name -> spec
      - name: github_ci
        provider: github
        client_id: Iv1.0123
        client_secret: {env: GITHUB_CLIENT_SECRET}
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workers.crypto.sealing import SEALED_FIELDS
from workers.engine.spec import NAME_PATTERN
from workers.errors import TokenkeeperError

REFERENCE_KINDS = ("env", "file", "sealed")
_PROJECT = re.compile(r"[A-Za-z0-9_./-]{1,100}")
_NAME = re.compile(NAME_PATTERN)
# A secret file is a key or a token, not a disk image; a file of 10,000 specs is a few megabytes.
MAX_SECRET_FILE = 1 << 20
MAX_FILE = 64 << 20


class ManifestError(TokenkeeperError):
    """A file of integrations that cannot be used as it is; the message names the place."""


@dataclass(frozen=True)
class Manifest:
    project: str
    specs: list[dict[str, Any]]
    # name -> field -> where its secret comes from ("env GITHUB_SECRET", "file keys/x.pem", "sealed box")
    references: dict[str, dict[str, str]] = field(default_factory=dict)

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {spec["name"]: spec for spec in self.specs}


def load(path: str, environ: Mapping[str, str] | None = None) -> Manifest:
    """Read ``path``, resolve its secret references, and tag each spec with the project (``managed_by``)."""
    source = Path(path)
    text = _read_regular_file(path, source, MAX_FILE)
    document = _parse(path, text)
    environ = os.environ if environ is None else environ
    if isinstance(document, list):
        document = {"integrations": document}
    if not isinstance(document, Mapping):
        raise ManifestError(f"{path}: expected a mapping with `integrations` (or a list of specs)")
    unknown = sorted(set(document) - {"project", "integrations"})
    if unknown:
        raise ManifestError(f"{path}: unknown top-level key {unknown[0]!r} (expected project, integrations)")
    if "project" not in document:
        # No default: two teams' files of the same name must not prune each other's integrations.
        raise ManifestError(f"{path}: name the project (`project: billing`): `apply --prune` deletes only its own")
    project = document["project"]
    if not isinstance(project, str) or not _PROJECT.fullmatch(project):
        raise ManifestError(f"{path}: project must be 1 to 100 letters, digits, or _ - . / characters")
    specs = _specs(path, document.get("integrations"))
    base = source.resolve().parent
    resolved: list[dict[str, Any]] = []
    references: dict[str, dict[str, str]] = {}
    for spec in specs:
        where = f"{path}: {spec['name']}"
        data: dict[str, Any] = {}
        refs: dict[str, str] = {}
        for key, value in spec.items():
            if key in SEALED_FIELDS:
                data[key], refs[key] = _secret(where, key, value, base, environ)
            else:
                data[key] = value
        if "managed_by" in data and data["managed_by"] != project:
            raise ManifestError(f"{where}.managed_by: set by the file's project ({project!r}); leave it out")
        data["managed_by"] = project
        resolved.append(data)
        references[spec["name"]] = refs
    return Manifest(project, resolved, references)


class _StrictLoader(yaml.SafeLoader):
    """safe_load without aliases, merge keys or duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ManifestError(f"line {event.start_mark.line + 1}: YAML aliases (*name) are not accepted here")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ManifestError(f"line {key_node.start_mark.line + 1}: YAML merge keys (<<) are not accepted here")
            key = self.construct_object(key_node, deep=deep)
            hashable = isinstance(key, str | int | float | bool)
            if hashable and key in seen:
                raise ManifestError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice")
            if hashable:
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestError(f"{key!r} is given twice")
        result[key] = value
    return result


def _parse(path: str, text: str) -> Any:
    if path.endswith(".json"):
        try:
            return json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        except ManifestError as exc:
            raise ManifestError(f"{path}: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader, stricter still
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ManifestError(f"{path} is not valid YAML: {problem}{at}") from None


def _specs(path: str, integrations: Any) -> list[dict[str, Any]]:
    if integrations is None:
        return []
    if isinstance(integrations, Mapping):
        specs = []
        for name, spec in integrations.items():
            if not isinstance(spec, Mapping):
                raise ManifestError(f"{path}: integrations.{name} must be a mapping (a spec)")
            if "name" in spec and spec["name"] != name:
                raise ManifestError(f"{path}: integrations.{name} names itself {spec['name']!r}")
            specs.append({"name": name, **spec})
    elif isinstance(integrations, list):
        specs = []
        for index, spec in enumerate(integrations):
            if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise ManifestError(f"{path}: integrations[{index}] must be a spec with a name")
            specs.append(dict(spec))
    else:
        raise ManifestError(f"{path}: integrations must be a list of specs or a mapping of name to spec")
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec["name"], str) or not _NAME.fullmatch(spec["name"]):
            # Checked here, not only by the workers: the plan prints names, and one could forge its lines.
            raise ManifestError(
                f"{path}: {str(spec['name'])[:70]!r} is not a name (a letter, then letters, digits, _ and -; "
                "at most 64)"
            )
        if spec["name"] in seen:
            raise ManifestError(f"{path}: {spec['name']} is declared twice")
        seen.add(spec["name"])
    return specs


def _secret(where: str, key: str, value: Any, base: Path, environ: Mapping[str, str]) -> tuple[Any, str]:
    """The secret a reference names, and how to show the reference."""
    place = f"{where}.{key}"
    if isinstance(value, str):
        raise ManifestError(
            f"{place}: a secret in plain text; give {{env: NAME}}, {{file: PATH}} or a sealed box "
            "(`tokenkeeper seal`), so the file can be kept in a repository"
        )
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in REFERENCE_KINDS:
        raise ManifestError(f"{place}: must be {{env: NAME}}, {{file: PATH}} or {{sealed: BOX}}")
    kind, target = next(iter(value.items()))
    if not isinstance(target, str) or not target:
        raise ManifestError(f"{place}.{kind}: must be a non-empty string")
    if kind == "sealed":
        return {"sealed": target}, "sealed box"
    if kind == "env":
        if target.upper().startswith("TOKENKEEPER_"):
            raise ManifestError(f"{place}: {target} is one of the service's own settings, not a secret to send")
        if target not in environ:
            raise ManifestError(f"{place}: environment variable {target} is not set")
        if not environ[target]:
            raise ManifestError(f"{place}: environment variable {target} is empty")
        return environ[target], f"env {target}"
    return _read_secret_file(place, target, base), f"file {target}"


def _read_secret_file(place: str, target: str, base: Path) -> str:
    candidate = base / target
    relative = Path(os.path.normpath(candidate))
    try:
        inside = relative.relative_to(base)
    except ValueError:
        inside = None
    if inside is None or not candidate.resolve().is_relative_to(base):
        raise ManifestError(f"{place}: {target} is outside the file's directory ({base})")
    if any(part.startswith(".") for part in inside.parts):
        raise ManifestError(f"{place}: {target} is in a hidden file or directory (.git, .ssh, .env…): not read")
    content = _read_regular_file(f"{place}: {target}", candidate, MAX_SECRET_FILE, within=base)
    # Editors and `echo` end files with a newline that is no part of the secret.
    content = content.removesuffix("\n").removesuffix("\r")
    if not content:
        raise ManifestError(f"{place}: {target} is empty")
    return content


def _read_regular_file(label: str, path: Path, limit: int, within: Path | None = None) -> str:
    """A regular file's text: never a FIFO or a device (which would block or never end), at most ``limit``
    bytes, and, with ``within``, checked after opening to be inside it (a directory swapped for a
    symlink between the check and the open is caught)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (os.O_NOFOLLOW if within is not None else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ManifestError(f"cannot read {label}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ManifestError(f"{label} is not a regular file")
        if within is not None and not _opened_path(fd, path).is_relative_to(within):
            raise ManifestError(f"{label} is outside the file's directory ({within})")
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise ManifestError(f"{label} is larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{label} is not UTF-8 text") from None


def _opened_path(fd: int, path: Path) -> Path:
    """Where the open file really is (Linux's /proc); elsewhere, the path resolved now."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return path.resolve()


def waves(specs: list[dict[str, Any]], acting: set[str]) -> list[list[str]]:
    """The names to create or update, in waves: a token exchange comes after its subject when that is
    created or updated too (a subject must exist, and allow the exchange, before its dependent is stored)."""
    result: list[list[str]] = []
    done: set[str] = set()
    left = [spec for spec in specs if spec["name"] in acting]
    while left:
        wave = [spec for spec in left if spec.get("subject_integration") not in acting - done - {spec["name"]}]
        if not wave:  # a loop: the workers refuse it with a clear error
            wave = left
        result.append([spec["name"] for spec in wave])
        done |= set(result[-1])
        left = [spec for spec in left if spec["name"] not in done]
    return result
