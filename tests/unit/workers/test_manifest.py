"""Files of integrations: secret references resolve, and a file that could leak or lose something is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.manifest import ManifestError, load, waves


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


SPEC = "grant_type: client_credentials\n    client_id: id\n    token_url: https://idp.example/token\n"


def test_references_resolve_and_specs_are_tagged_with_the_project(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "secret.txt").write_text("from-a-file\n")
    path = write(
        tmp_path / "team.yaml",
        "integrations:\n"
        f"  a:\n    {SPEC}    client_secret: {{env: A_SECRET}}\n"
        f"  b:\n    {SPEC}    client_secret: {{file: keys/secret.txt}}\n"
        f"  c:\n    {SPEC}    client_secret: {{sealed: Ym94}}\n",
    )
    manifest = load(path, {"A_SECRET": "from-env"})
    assert manifest.project == "team"  # the file's name when the file names none
    found = manifest.by_name()
    assert found["a"]["client_secret"] == "from-env"
    assert found["b"]["client_secret"] == "from-a-file"  # the final newline is no part of it
    assert found["c"]["client_secret"] == {"sealed": "Ym94"}
    assert {spec["managed_by"] for spec in manifest.specs} == {"team"}


def test_json_lists_are_files_too(tmp_path: Path) -> None:
    path = write(tmp_path / "x.json", '{"project": "p", "integrations": [{"name": "a", "client_id": "i"}]}')
    assert load(path, {}).specs == [{"name": "a", "client_id": "i", "managed_by": "p"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"integrations:\n  a:\n    {SPEC}    client_secret: hunter2\n", "a.client_secret: a secret in plain text"),
        (f"integrations:\n  a:\n    {SPEC}    client_secret: {{env: NOT_SET}}\n", "NOT_SET is not set"),
        (f"integrations:\n  a:\n    {SPEC}    client_secret: {{shell: id}}\n", "must be {env: NAME}"),
        ("integrations:\n  - {name: a}\n  - {name: a}\n", "a is declared twice"),
        ("integrations:\n  - {client_id: x}\n", "integrations[0] must be a spec with a name"),
        ("integrations: [\n", "is not valid YAML"),
        ("projects: x\n", "unknown top-level key 'projects'"),
        ("project: 'a b'\nintegrations: []\n", "project must be"),
        ("project: p\nintegrations:\n  a: {managed_by: q}\n", "a.managed_by: set by the file's project"),
    ],
)
def test_bad_files_are_refused_naming_the_place(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("{", r"\{").replace("[", r"\[")):
        load(write(tmp_path / "f.yaml", text), {})


def test_a_file_reference_cannot_leave_the_files_directory(tmp_path: Path) -> None:
    """A file from a pull request must not send the operator's own files to a token endpoint of its choosing."""
    outside = tmp_path / "id_rsa"
    outside.write_text("PRIVATE KEY")
    repo = tmp_path / "repo"
    repo.mkdir()
    os.symlink(outside, repo / "innocent.txt")
    for target in ("../id_rsa", str(outside), "innocent.txt"):
        path = write(repo / "f.yaml", f"integrations:\n  a:\n    {SPEC}    client_secret: {{file: '{target}'}}\n")
        with pytest.raises(ManifestError, match="outside the file's directory") as caught:
            load(path, {})
        assert "PRIVATE KEY" not in str(caught.value)


def test_a_token_exchange_is_applied_after_its_subject() -> None:
    specs = [
        {"name": "downstream", "subject_integration": "upstream"},
        {"name": "upstream"},
        {"name": "other", "subject_integration": "stored-already"},
    ]
    assert waves(specs, {"downstream", "upstream", "other"}) == [["upstream", "other"], ["downstream"]]
    # A loop cannot be ordered: sent together, the workers refuse it by name.
    loop = [{"name": "a", "subject_integration": "b"}, {"name": "b", "subject_integration": "a"}]
    assert waves(loop, {"a", "b"}) == [["a", "b"]]
