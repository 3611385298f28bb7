"""Files of integrations for ``tokenkeeper plan`` / ``apply``: YAML or JSON, with secrets as references.

A file may live in a repository, so a secret field never holds plain text; it holds one of

    {"env": "NAME"}    the value of environment variable NAME where the command runs
    {"file": "PATH"}   the contents of PATH (one final newline dropped), relative to the file,
                       and never outside the file's directory: a file from a pull request must not
                       be able to send ~/.ssh/id_rsa to a token endpoint of its choosing
    {"sealed": "..."}  a sealed box (``tokenkeeper seal``), opened only by the workers

The shape::

    project: billing          # optional; what `apply --prune` may delete (default: the file's name)
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workers.crypto.sealing import SEALED_FIELDS
from workers.errors import TokenkeeperError

REFERENCE_KINDS = ("env", "file", "sealed")
_PROJECT = re.compile(r"[A-Za-z0-9_./-]{1,100}")
# A secret file is a key or a token, not a disk image.
MAX_SECRET_FILE = 1 << 20


class ManifestError(TokenkeeperError):
    """A file of integrations that cannot be used as it is; the message names the place."""


@dataclass(frozen=True)
class Manifest:
    project: str
    specs: list[dict[str, Any]]

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {spec["name"]: spec for spec in self.specs}


def load(path: str, environ: Mapping[str, str] | None = None) -> Manifest:
    """Read ``path``, resolve its secret references, and tag each spec with the project (``managed_by``)."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is not UTF-8 text") from None
    document = _parse(path, text)
    environ = os.environ if environ is None else environ
    if isinstance(document, list):
        document = {"integrations": document}
    if not isinstance(document, Mapping):
        raise ManifestError(f"{path}: expected a mapping with `integrations` (or a list of specs)")
    unknown = sorted(set(document) - {"project", "integrations"})
    if unknown:
        raise ManifestError(f"{path}: unknown top-level key {unknown[0]!r} (expected project, integrations)")
    project = document.get("project", source.stem)
    if not isinstance(project, str) or not _PROJECT.fullmatch(project):
        raise ManifestError(
            f"{path}: project must be 1 to 100 letters, digits, or _ - . / characters"
            + ("" if "project" in document else f" (it defaults to the file's name, {source.stem!r}; set `project:`)")
        )
    specs = _specs(path, document.get("integrations"))
    base = source.resolve().parent
    resolved = []
    for spec in specs:
        where = f"{path}: {spec['name']}"
        data = {
            key: _secret(where, key, value, base, environ) if key in SEALED_FIELDS else value
            for key, value in spec.items()
        }
        if "managed_by" in data and data["managed_by"] != project:
            raise ManifestError(f"{where}.managed_by: set by the file's project ({project!r}); leave it out")
        data["managed_by"] = project
        resolved.append(data)
    return Manifest(project, resolved)


def _parse(path: str, text: str) -> Any:
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    try:
        return yaml.safe_load(text)
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
        if not isinstance(spec["name"], str):
            raise ManifestError(f"{path}: a name must be text, not {spec['name']!r}")
        if spec["name"] in seen:
            raise ManifestError(f"{path}: {spec['name']} is declared twice")
        seen.add(spec["name"])
    return specs


def _secret(where: str, key: str, value: Any, base: Path, environ: Mapping[str, str]) -> Any:
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
        return {"sealed": target}
    if kind == "env":
        if target not in environ:
            raise ManifestError(f"{place}: environment variable {target} is not set")
        if not environ[target]:
            raise ManifestError(f"{place}: environment variable {target} is empty")
        return environ[target]
    return _read_secret_file(place, target, base)


def _read_secret_file(place: str, target: str, base: Path) -> str:
    candidate = (base / target).resolve()
    if not candidate.is_relative_to(base):
        raise ManifestError(f"{place}: {target} is outside the file's directory ({base})")
    try:
        with candidate.open("rb") as handle:
            raw = handle.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ManifestError(f"{place}: cannot read {target}: {exc.strerror}") from None
    if len(raw) > MAX_SECRET_FILE:
        raise ManifestError(f"{place}: {target} is larger than {MAX_SECRET_FILE} bytes")
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{place}: {target} is not UTF-8 text") from None
    # Editors and `echo` end files with a newline that is no part of the secret.
    content = content.removesuffix("\n").removesuffix("\r")
    if not content:
        raise ManifestError(f"{place}: {target} is empty")
    return content


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
