"""constraints.txt locks the service's dependencies, within pyproject's bounds, at the versions the tests run on."""

from __future__ import annotations

from pathlib import Path

from packaging.utils import canonicalize_name

from scripts.lock import LOCK, installed_closure, read_lock, render, service_requirements

ROOT = Path(__file__).resolve().parents[2]


def test_the_lock_pins_every_service_dependency_within_its_bounds() -> None:
    """Each of pyproject's service requirements is pinned, at a version its specifier allows."""
    pins = read_lock(LOCK.read_text())
    for requirement in service_requirements():
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in constraints.txt: run scripts/lock.py"
        assert requirement.specifier.contains(version), f"constraints.txt pins {requirement.name}=={version}"


def test_the_lock_is_what_the_tests_run_on() -> None:
    """constraints.txt equals what scripts/lock.py writes from this venv: the tested versions are the locked ones."""
    assert LOCK.read_text() == render(installed_closure(service_requirements())), "run scripts/lock.py"


def test_the_lock_leaves_out_tokenkeeper_and_the_test_tools() -> None:
    """Neither the project itself nor a test-only tool is pinned for the service image."""
    pins = read_lock(LOCK.read_text())
    assert not {"tokenkeeper-oauth-service", "pytest", "hypothesis", "selenium", "ruff"} & set(pins)


def test_the_image_and_the_venv_install_with_the_lock() -> None:
    """The Dockerfile and scripts/_venv.sh (behind scripts/up and scripts/test) pass -c constraints.txt to pip."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md constraints.txt" in dockerfile
    assert 'pip install --no-cache-dir -c constraints.txt -e ".${TOKENKEEPER_EXTRAS:+' in dockerfile
    venv = (ROOT / "scripts" / "_venv.sh").read_text()
    assert "pip install --quiet -c constraints.txt -e" in venv
    assert "cat pyproject.toml constraints.txt | sha1sum" in venv, "a changed lock must reinstall"
