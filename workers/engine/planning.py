"""``tokenkeeper plan``'s worker side: a file's specs against what is stored, field by field, secrets by digest.

The file's secrets arrive sealed and are opened here only to be digested; the answer names fields,
never values. Nothing is written: a plan that is never applied leaves no trace.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from workers.engine.declared import Difference, Plan, decode, difference, legacy_given, to_prune
from workers.engine.exchange import allows, refusal
from workers.engine.registry import Registry, failure
from workers.engine.runtime import Runtime
from workers.engine.spec import merge_changes, stored_spec
from workers.errors import SpecError
from workers.store import IntegrationRecord

# One plan task reads every stored integration it names in one round trip: bounded, like a bulk creation.
MAX_PLANNED = 10000


class Planner:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.registry = Registry(runtime)

    def plan(self, items: Sequence[Any], project: str, prune: bool, adopt: bool = False) -> Plan:
        if len(items) > MAX_PLANNED:
            raise SpecError(f"a plan takes at most {MAX_PLANNED} integrations")
        plan = Plan()
        wanted = self._opened(items, plan)
        stored = {record.name: record for record, _ in self.rt.store.load_many(wanted)}
        for name, data in wanted.items():
            try:
                self._compare(plan, name, data, stored.get(name), project, wanted, adopt)
            except Exception as exc:  # noqa: BLE001 -- this integration's error, reported in the plan
                plan.errors[name] = failure(data, exc)["error"]
        if prune:
            names = self.rt.store.names()
            plan.delete = to_prune(self.rt.store.public_specs(names), project, set(wanted))
            self._check_renames(plan, wanted)
        return plan

    def _check_renames(self, plan: Plan, wanted: Mapping[str, Mapping[str, Any]]) -> None:
        """A creation that takes the refresh token of an integration this apply deletes (a rename) is refused:
        deleting revokes that token at the provider, and the new integration would hold a dead one."""
        given = {name: wanted[name]["refresh_token"] for name in plan.create if wanted[name].get("refresh_token")}
        if not given or not plan.delete:
            return
        for record, _ in self.rt.store.load_many(plan.delete):
            held = self.rt.box.open(record.sealed_secrets).get("refresh_token")
            for name, token in given.items():
                if held and hmac.compare_digest(str(token).encode(), held.encode()):
                    plan.create.remove(name)
                    plan.errors[name] = (
                        f"takes the refresh token of {record.name}, which --prune deletes and so revokes at the "
                        f"provider: keep {record.name} in the file until {name} has a refresh token of its own"
                    )

    def _opened(self, items: Sequence[Any], plan: Plan) -> dict[str, dict[str, Any]]:
        """The file's specs by name, secrets opened; a spec without a name, or a name twice, is an error."""
        opened: dict[str, dict[str, Any]] = {}
        for index, item in enumerate(items):
            name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(name, str) or not name:
                plan.errors[f"#{index + 1}"] = "has no name"
                continue
            if name in opened or name in plan.errors:
                plan.errors[name] = "is named twice in the file"
                opened.pop(name, None)
                continue
            try:
                opened[name] = self.rt.opener.open_fields(item)
            except Exception as exc:  # noqa: BLE001 -- this integration's error, reported in the plan
                plan.errors[name] = failure(item, exc)["error"]
        return opened

    def _compare(
        self,
        plan: Plan,
        name: str,
        data: dict[str, Any],
        record: IntegrationRecord | None,
        project: str,
        wanted: Mapping[str, Mapping[str, Any]],
        adopt: bool,
    ) -> None:
        subject = data.get("subject_integration")
        in_file = isinstance(subject, str) and subject in wanted
        if record is None:
            self.registry.validate(data, check_subject=not in_file)
            self._check_file_subject(name, data, wanted)
            plan.create.append(name)
            return
        owner = record.public.get("managed_by")
        if owner not in (None, project):
            raise SpecError({"managed_by": [f"{name!r} is kept by project {owner!r}, not {project!r}"]})
        if owner is None and not adopt:
            raise SpecError(
                {
                    "managed_by": [
                        f"{name!r} exists and is kept by no file; pass --adopt to make it project {project!r}'s"
                    ]
                }
            )
        digests = self.rt.digests
        current = stored_spec(record, self.rt.box)
        stored = decode(record.given)
        if stored is None or not digests.known(stored):
            # Made before digests were kept, or under a key that is gone: compared by the stored values.
            stored = legacy_given(digests, record.public, current.secrets(), data)
        found = difference(stored, digests.given(data))
        if found.empty:
            plan.unchanged.append(name)
            return
        self.registry.validate(merge_changes(current, changes(data, found)), check_subject=not in_file)
        self._check_file_subject(name, data, wanted)
        plan.update[name] = found

    @staticmethod
    def _check_file_subject(name: str, data: Mapping[str, Any], wanted: Mapping[str, Mapping[str, Any]]) -> None:
        """A subject the file also declares must let ``name`` exchange its token as the file declares it."""
        subject = data.get("subject_integration")
        if isinstance(subject, str) and subject in wanted and not allows(wanted[subject], name):
            raise SpecError({"subject_integration": [refusal(subject, name)]})


# Changing one of these drops fields the update does not name (a preset's URLs, a key file's client):
# the whole spec is sent, so that what the file names stays, and its digests with it.
_SWEEPING = frozenset({"provider", "provider_params", "private_key"})


def changes(data: Mapping[str, Any], found: Difference) -> dict[str, Any]:
    """The update that makes a stored integration what ``data`` says: the differing fields, null for removed."""
    named = found.fields()
    keys = [key for key in data if key != "name"] if _SWEEPING & set(named) else [*found.changed, *found.secrets]
    update: dict[str, Any] = {key: data[key] for key in keys}
    update.update(dict.fromkeys(found.removed))
    return update
