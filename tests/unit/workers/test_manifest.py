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
        "project: team\nintegrations:\n"
        f"  a:\n    {SPEC}    client_secret: {{env: A_SECRET}}\n"
        f"  b:\n    {SPEC}    client_secret: {{file: keys/secret.txt}}\n"
        f"  c:\n    {SPEC}    client_secret: {{sealed: Ym94}}\n",
    )
    manifest = load(path, {"A_SECRET": "from-env"})
    assert manifest.project == "team"
    found = manifest.by_name()
    assert found["a"]["client_secret"] == "from-env"
    assert found["b"]["client_secret"] == "from-a-file"  # the final newline is no part of it
    assert found["c"]["client_secret"] == {"sealed": "Ym94"}
    assert {spec["managed_by"] for spec in manifest.specs} == {"team"}
    assert manifest.references == {
        "a": {"client_secret": "env A_SECRET"},
        "b": {"client_secret": "file keys/secret.txt"},
        "c": {"client_secret": "sealed box"},
    }


def test_json_lists_are_files_too(tmp_path: Path) -> None:
    path = write(tmp_path / "x.json", '{"project": "p", "integrations": [{"name": "a", "client_id": "i"}]}')
    assert load(path, {}).specs == [{"name": "a", "client_id": "i", "managed_by": "p"}]
    twice = write(tmp_path / "y.json", '{"project": "p", "project": "q", "integrations": []}')
    with pytest.raises(ManifestError, match="'project' is given twice"):
        load(twice, {})


def test_a_billion_laughs_is_refused_before_it_grows(tmp_path: Path) -> None:
    lines = ["project: p", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 10)]
    with pytest.raises(ManifestError, match="YAML aliases"):
        load(write(tmp_path / "laughs.yaml", "\n".join(lines) + "\n"), {})


P = "project: p\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{P}integrations:\n  a:\n    {SPEC}    client_secret: hunter2\n", "a.client_secret: a secret in plain text"),
        (f"{P}integrations:\n  a:\n    {SPEC}    client_secret: {{env: NOT_SET}}\n", "NOT_SET is not set"),
        (f"{P}integrations:\n  a:\n    {SPEC}    client_secret: {{shell: id}}\n", "must be {env: NAME}"),
        (
            f"{P}integrations:\n  a:\n    {SPEC}    client_secret: {{env: TOKENKEEPER_SECRET_KEY}}\n",
            "one of the service's own settings",
        ),
        (f"{P}integrations:\n  - {{name: a}}\n  - {{name: a}}\n", "a is declared twice"),
        (f"{P}integrations:\n  - {{client_id: x}}\n", "integrations[0] must be a spec with a name"),
        (f'{P}integrations:\n  - {{name: "a\\n  + forged  create"}}\n', "is not a name"),
        ("integrations: [\n", "is not valid YAML"),
        ("integrations: []\n", "name the project"),
        ("projects: x\n", "unknown top-level key 'projects'"),
        ("project: 'a b'\nintegrations: []\n", "project must be"),
        ("project: p\nintegrations:\n  a: {managed_by: q}\n", "a.managed_by: set by the file's project"),
        # What a reviewer reads must be what the file means: no aliases, merge keys or keys given twice.
        (f"{P}x: &a [1]\nintegrations: *a\n", "YAML aliases"),
        (f"{P}integrations:\n  a: {{<<: {{client_id: x}}}}\n", "YAML merge keys"),
        (
            f"{P}integrations:\n  a:\n    token_url: https://good\n    token_url: https://evil\n",
            "'token_url' is given twice",
        ),
        (f"{P}integrations:\n  a: {{}}\n  a: {{}}\n", "'a' is given twice"),
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
        path = write(repo / "f.yaml", f"{P}integrations:\n  a:\n    {SPEC}    client_secret: {{file: '{target}'}}\n")
        with pytest.raises(ManifestError, match="outside the file's directory") as caught:
            load(path, {})
        assert "PRIVATE KEY" not in str(caught.value)


def test_hidden_files_and_special_files_are_not_read(tmp_path: Path) -> None:
    """A repository's .git/config holds the CI runner's token; a FIFO would block the command for ever."""
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("extraheader = AUTHORIZATION: basic c2VjcmV0")
    os.mkfifo(tmp_path / "pipe")
    for target, message in ((".git/config", "hidden file or directory"), ("pipe", "is not a regular file")):
        path = write(tmp_path / "f.yaml", f"{P}integrations:\n  a:\n    {SPEC}    client_secret: {{file: {target}}}\n")
        with pytest.raises(ManifestError, match=message) as caught:
            load(path, {})
        assert "c2VjcmV0" not in str(caught.value)
    os.symlink("/dev/zero", tmp_path / "zero.yaml")
    with pytest.raises(ManifestError, match="is not a regular file"):
        load(str(tmp_path / "zero.yaml"), {})


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
