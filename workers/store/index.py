"""The operators' index: pages of integrations by name prefix, status, grant type and provider, read
without touching an integration that is not shown.

Kept by the scripts that create, change and delete integrations (``lua/index.lua``), in the same atomic
step as the change, so it cannot drift from the records:

* ``P index:names``, every name in a sorted set with score 0, read in name order with ``ZRANGEBYLEX``
  (a name prefix is a range; a page goes on from the last name shown);
* one *cell* per combination of status, grant type and provider preset that has integrations
  (``P index:cell:<status>:<grant>:<provider>``, the same kind of set), and their sizes in one hash,
  ``P index:cells``: the counts by status, grant type and provider are one ``HGETALL`` of a few
  dozen fields, and a filtered page merges the ranges of the cells that match.

A page is one script (``lua/page.lua``) whatever the number of integrations: the cell sizes, a range of at
most ``limit`` names and two ``ZLEXCOUNT`` per source set, and the fields of the names shown.
:meth:`Index.rebuild` files what a store made before the index holds (and repairs what hands changed).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from workers.store.codec import text
from workers.store.keys import Keys
from workers.store.scripts import lua

# The provider of an integration that names no preset.
NO_PROVIDER = ""

# Above every character a name may have (letters, digits, _ and -): "names starting with p" end before p + this.
_AFTER_NAMES = b"\xff"


class Cell(NamedTuple):
    """One combination of status, grant type and provider preset (``""``: none), as the index files them."""

    status: str
    grant: str
    provider: str

    @classmethod
    def parse(cls, raw: str) -> Cell:
        status, _, rest = raw.partition(":")
        grant, _, provider = rest.partition(":")
        return cls(status, grant, provider)

    @property
    def id(self) -> str:
        return f"{self.status}:{self.grant}:{self.provider}"


@dataclass(frozen=True)
class Filters:
    """What a page is narrowed to; ``None`` admits any value, ``provider=""`` those without a preset."""

    status: str | None = None
    grant: str | None = None
    provider: str | None = None

    @property
    def narrowed(self) -> bool:
        return (self.status, self.grant, self.provider) != (None, None, None)

    def admits(self, cell: Cell) -> bool:
        return (
            (self.status is None or self.status == cell.status)
            and (self.grant is None or self.grant == cell.grant)
            and (self.provider is None or self.provider == cell.provider)
        )


@dataclass(frozen=True)
class Page:
    """Names in name order, and where they stand among all that match."""

    names: tuple[str, ...]
    # How many names match the filters and prefix, on all pages; how many of those come before this page.
    matching: int
    position: int
    # Every cell's size: the counts by status, grant type and provider, whatever the filters.
    cells: Mapping[Cell, int] = field(default_factory=dict)
    # Names in the index and in the store: they differ only until a store from before the index is rebuilt.
    indexed: int = 0
    stored: int = 0
    # The fields asked for of each name's integration, as far as it has them ({}: deleted meanwhile).
    rows: tuple[dict[str, str], ...] = ()

    @property
    def more_before(self) -> bool:
        return self.position > 0

    @property
    def more_after(self) -> bool:
        return self.position + len(self.names) < self.matching

    def counts(self, facet: str) -> dict[str, int]:
        """Integrations per value of ``facet`` (``status``, ``grant`` or ``provider``), all of them."""
        totals: dict[str, int] = {}
        for cell, size in self.cells.items():
            value = getattr(cell, facet)
            totals[value] = totals.get(value, 0) + size
        return totals


@dataclass(frozen=True)
class Rebuilt:
    filed: int  # names filed anew or moved to the cell their record says
    removed: int  # names without an integration, taken out
    recounted: int  # cell sizes corrected


class Index:
    """Reads of the index, and its rebuild. Receives its client; opens nothing itself."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._reindex = client.register_script(lua("reindex", "index"))
        self._page = client.register_script(lua("page"))

    def cells(self) -> dict[Cell, int]:
        return {Cell.parse(text(cell)): int(size) for cell, size in self.redis.hgetall(self.keys.index_cells).items()}

    def counts(self, facet: str) -> dict[str, int]:
        """Integrations per ``status``, ``grant`` or ``provider``: one small hash, whatever their number."""
        return Page((), 0, 0, self.cells()).counts(facet)

    def page(
        self,
        filters: Filters = Filters(),
        *,
        prefix: str = "",
        after: str = "",
        before: str = "",
        limit: int = 100,
        fields: Sequence[str] = (),
    ) -> Page:
        """Up to ``limit`` names that match, in name order, after ``after`` (or the ``limit`` before ``before``),
        and ``fields`` of each of those integrations: one script, one round trip (lua/page.lua)."""
        low, high = (b"[" + prefix.encode(), b"(" + prefix.encode() + _AFTER_NAMES) if prefix else (b"-", b"+")
        if before:
            # A cursor past the prefix's names ends the page at their end.
            within = not prefix or before < prefix or before.startswith(prefix)
            direction, start = "backward", b"(" + before.encode() if within else high
            counted_to = start
        else:
            direction, start = "forward", b"(" + after.encode() if after and after >= prefix else low
            counted_to = b"[" + after.encode() if after else b""
        wanted = {key: value for key, value in vars(filters).items() if value is not None}
        keys = [self.keys.index_cells, self.keys.index_names, self.keys.names]
        args: list[str | bytes | int] = [
            self.keys.index_cell(""),
            self.keys.integration(""),
            json.dumps(wanted),
            low,
            high,
            direction,
            start,
            counted_to,
            limit,
            *fields,
        ]
        raw_cells, indexed, stored, matching, earlier, raw_names, raw_rows = self._page(keys=keys, args=args)
        names = tuple(text(name) for name in raw_names)
        if before and not names:
            # Nothing before it (it was the first): the first page.
            return self.page(filters, prefix=prefix, limit=limit, fields=fields)
        cells = {Cell.parse(text(cell)): int(size) for cell, size in zip(raw_cells[::2], raw_cells[1::2], strict=True)}
        # Decoded here rather than by text(): a hundred rows of ten fields each, on every page.
        rows = tuple(
            {
                key: value.decode() if isinstance(value, bytes) else value
                for key, value in zip(fields, values, strict=True)
                if value is not None
            }
            for values in raw_rows
        )
        return Page(names, int(matching), int(earlier), cells, int(indexed), int(stored), rows)

    # -- the rebuild ---------------------------------------------------------
    def complete(self) -> bool:
        """Every stored integration is in the index (false for a store from before it, until rebuilt)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.index_names)
        pipe.scard(self.keys.names)
        indexed, stored = pipe.execute()
        return bool(indexed == stored)

    def rebuild(self, batch: int = 1000) -> Rebuilt:
        """File every integration where its record says and drop names that have none, ``batch`` at a time.

        Each batch is one atomic script, so writes going on meanwhile keep the index right (they file what
        they change themselves); a second run over a correct index changes nothing.
        """
        filed = removed = 0
        for names in _chunks((text(name) for name in self.redis.sscan_iter(self.keys.names, count=batch)), batch):
            added, _ = self._repair("names", names)
            filed += added
        # Names left in the index without an integration (hands deleted it), in name order from a cursor.
        start = b"-"
        while chunk := self.redis.zrangebylex(self.keys.index_names, start, b"+", 0, batch):
            _, dropped = self._repair("stale", [text(name) for name in chunk])
            removed += dropped
            start = b"(" + text(chunk[-1]).encode()
        recounted, _ = self._repair("recount", [])
        return Rebuilt(filed, removed, recounted)

    def _repair(self, mode: str, names: list[str]) -> tuple[int, int]:
        keys = [self.keys.index_names, self.keys.index_cells]
        args: list[Any] = [self.keys.integration(""), self.keys.index_cell(""), mode, *names]
        first, second = self._reindex(keys=keys, args=args)
        return int(first), int(second)


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
