"""``tokenkeeper plan FILE`` and ``tokenkeeper apply FILE``: a file of integrations kept in step, as Terraform does.

The plan is worked out by a worker (``tokenkeeper.plan_integrations``), which alone can open the file's
sealed secrets and compare them with what was given before; this side only reads the file and shows
the answer. Apply sends the plan's changes with the contract's own tasks, each all-or-nothing, and
says of each integration whether it was done; a run cut short is finished by running it again.

Exit codes (Terraform's ``-detailed-exitcode``): plan 0 no changes, 2 changes, 1 error; apply 0 done, 1 error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO
from urllib.parse import urlsplit

from workers.engine.declared import Difference
from workers.engine.planning import changes
from workers.errors import TokenkeeperError
from workers.manifest import Manifest, load, waves

EXIT_NO_CHANGES, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
# A creation task carries this many specs; this many tasks of a kind are unanswered at a time.
CREATIONS_PER_TASK = 100
TASKS_IN_FLIGHT = 20


def plan_command(celery: Any, options: Any) -> int:
    manifest = load(options.file)
    plan = _plan(celery, manifest, options)
    _show_plan(options.file, manifest, plan)
    if plan["errors"]:
        return EXIT_ERROR
    return EXIT_CHANGES if _has_changes(plan) else EXIT_NO_CHANGES


def apply_command(celery: Any, options: Any, confirm: Callable[[], bool]) -> int:
    manifest = load(options.file)
    plan = _plan(celery, manifest, options)
    _show_plan(options.file, manifest, plan)
    if plan["errors"]:
        raise TokenkeeperError("nothing was applied: the plan has errors (above)")
    if not _has_changes(plan):
        return 0
    if not options.yes and not confirm():
        raise TokenkeeperError("nothing was applied")
    report = Apply(celery, manifest, plan, sys.stdout, public_key=options.public_key).run()
    if report["failed"]:
        raise TokenkeeperError(f"{report['failed']} of {report['attempted']} changes failed; the others were applied")
    return 0


def ask_at_terminal() -> bool:
    """Terraform's question: only ``yes`` goes ahead. Without a terminal there is nobody to ask."""
    if not sys.stdin.isatty():
        raise TokenkeeperError("apply asks before changing anything: pass --yes to apply without a terminal")
    answer = input("\nApply these changes? Only 'yes' is accepted: ")
    return answer.strip() == "yes"


def _plan(celery: Any, manifest: Manifest, options: Any) -> dict[str, Any]:
    from workers.producer import call

    plan: dict[str, Any] = call(
        celery,
        "tokenkeeper.plan_integrations",
        manifest.specs,
        manifest.project,
        bool(options.prune),
        bool(options.adopt),
        timeout=options.timeout,
        public_key=options.public_key,
    )
    return plan


def _has_changes(plan: Mapping[str, Any]) -> bool:
    return bool(plan["create"] or plan["update"] or plan["delete"])


def _show_plan(path: str, manifest: Manifest, plan: Mapping[str, Any], out: TextIO = sys.stdout) -> None:
    print(f"{path}: project {manifest.project}, {len(manifest.specs)} integrations\n", file=out)
    specs = manifest.by_name()
    lines: list[tuple[str, str, str]] = []
    lines += [
        ("+", name, "create" + _whereto(specs[name], manifest.references.get(name, {}), list(specs[name])))
        for name in plan["create"]
    ]
    lines += [
        (
            "~",
            item["name"],
            "update: "
            + describe_update(item)
            + _whereto(
                specs[item["name"]], manifest.references.get(item["name"], {}), item["changed"] + item["secrets"]
            )
            + _restarts(specs[item["name"]]),
        )
        for item in plan["update"]
    ]
    lines += [("-", name, "delete") for name in plan["delete"]]
    lines += [("!", item["name"], "error: " + item["error"]) for item in plan["errors"]]
    if not lines:
        print("  No changes: the integrations are what the file says.", file=out)
    width = max((len(name) for _, name, _ in lines), default=0)
    for mark, name, what in lines:
        print(f"  {mark} {name.ljust(width)}  {what}", file=out)
    counts = (
        f"{len(plan['create'])} to create, {len(plan['update'])} to update, {len(plan['delete'])} to delete, "
        f"{len(plan['unchanged'])} unchanged"
    )
    errors = f", {len(plan['errors'])} errors" if plan["errors"] else ""
    print(f"\nPlan: {counts}{errors}.", file=out)


# Where a spec sends its secrets: shown beside them, for whoever reviews a file from a pull request.
_ENDPOINTS = ("token_url", "refresh_url", "device_authorization_url", "issuer")


def _whereto(spec: Mapping[str, Any], references: Mapping[str, str], fields: list[str]) -> str:
    """`` (→ idp.example; client_secret from env X)`` for the fields named: the endpoint a change sends
    secrets to, and where each secret it sends comes from."""
    shown = [f"{key} from {references[key]}" for key in fields if key in references]
    if not shown and not any(key in _ENDPOINTS or key == "provider" for key in fields):
        return ""
    hosts = sorted({urlsplit(str(spec[key])).hostname or str(spec[key]) for key in _ENDPOINTS if spec.get(key)})
    target = ", ".join(hosts) if hosts else f"preset {spec['provider']}" if spec.get("provider") else "?"
    return f" (→ {target}" + "".join(f"; {item}" for item in shown) + ")"


def _restarts(spec: Mapping[str, Any]) -> str:
    # An update of a device grant asks for a new code: a person has to approve again.
    return "; a person must approve it again (device flow)" if spec.get("grant_type") == "device_code" else ""


def describe_update(item: Mapping[str, Any]) -> str:
    parts = []
    if item["changed"]:
        parts.append(", ".join(item["changed"]))
    if item["secrets"]:
        parts.append(", ".join(f"{name} (secret, changed)" for name in item["secrets"]))
    if item["removed"]:
        parts.append("removed " + ", ".join(item["removed"]))
    return "; ".join(parts)


class Apply:
    """Sends a plan's changes: creations and updates in waves (a token exchange after its subject), then
    deletions; prints each integration's outcome as it arrives."""

    def __init__(
        self, celery: Any, manifest: Manifest, plan: Mapping[str, Any], out: TextIO, public_key: str | None = None
    ) -> None:
        self.celery = celery
        self.public_key = public_key
        self.specs = manifest.by_name()
        self.manifest = manifest
        self.plan = plan
        self.out = out
        self.counts = {"created": 0, "updated": 0, "deleted": 0, "failed": 0}

    def run(self) -> dict[str, int]:
        print("", file=self.out)
        updates = {item["name"]: item for item in self.plan["update"]}
        creating = set(self.plan["create"])
        for wave in waves(self.manifest.specs, creating | set(updates)):
            self._create([name for name in wave if name in creating])
            self._update([updates[name] for name in wave if name in updates])
        if self.counts["failed"] and self.plan["delete"]:
            # A deletion revokes tokens at the provider: never while what was to replace them is not in place.
            names = ", ".join(self.plan["delete"])
            print(f"  not deleted: {names} (a change above failed; apply again once it is fixed)", file=self.out)
        else:
            self._delete(list(self.plan["delete"]))
        attempted = sum(self.counts.values())
        print(
            f"\nApply: {self.counts['created']} created, {self.counts['updated']} updated, "
            f"{self.counts['deleted']} deleted, {self.counts['failed']} failed, "
            f"{len(self.plan['unchanged'])} unchanged.",
            file=self.out,
        )
        return {**self.counts, "attempted": attempted}

    def _outcome(self, done: str, name: str, error: str | None) -> None:
        if error is None:
            self.counts[done] += 1
            print(f"  {done} {name}", file=self.out, flush=True)
        else:
            self.counts["failed"] += 1
            print(f"  FAILED {name}: {error} (left as it was)", file=self.out, flush=True)

    def _create(self, names: list[str]) -> None:
        from workers.producer import call_many

        chunks = [names[start : start + CREATIONS_PER_TASK] for start in range(0, len(names), CREATIONS_PER_TASK)]

        def outcome(index: int, ok: bool, value: Any) -> None:
            for position, name in enumerate(chunks[index]):
                result = value[position] if ok else {"error": value}
                self._outcome("created", name, result.get("error"))

        call_many(
            self.celery,
            "tokenkeeper.create_integrations",
            (([self.specs[name] for name in chunk],) for chunk in chunks),
            window=TASKS_IN_FLIGHT,
            on_result=outcome,
            public_key=self.public_key,
        )

    def _update(self, items: list[Mapping[str, Any]]) -> None:
        from workers.producer import call_many

        def outcome(index: int, ok: bool, value: Any) -> None:
            self._outcome("updated", items[index]["name"], None if ok else value)

        found = [Difference(tuple(i["changed"]), tuple(i["secrets"]), tuple(i["removed"])) for i in items]
        call_many(
            self.celery,
            "tokenkeeper.update_integration",
            ((item["name"], changes(self.specs[item["name"]], d)) for item, d in zip(items, found, strict=True)),
            window=TASKS_IN_FLIGHT,
            on_result=outcome,
            public_key=self.public_key,
        )

    def _delete(self, names: list[str]) -> None:
        from workers.producer import call_many

        def outcome(index: int, ok: bool, value: Any) -> None:
            self._outcome("deleted", names[index], None if ok else value)

        call_many(
            self.celery,
            "tokenkeeper.delete_integration",
            ((name,) for name in names),
            window=TASKS_IN_FLIGHT,
            on_result=outcome,
            public_key=self.public_key,
        )
