"""Every Redis key and channel name tokenkeeper uses, built in one place from the configurable prefix.

The Store, the Python reader (:mod:`workers.consumer`), the metrics and the Redis ACLs all build their
names here, so a key cannot be spelled two ways. The key layout is part of the outside contract (runners
read ``<prefix>token:<name>`` directly); see the table in :mod:`workers.store`.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "tokenkeeper:"


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    # -- per integration -------------------------------------------------
    def token(self, name: str) -> str:
        """The consumer hash runners read (``*`` gives the ACL pattern of all of them)."""
        return f"{self.prefix}token:{name}"

    def integration(self, name: str) -> str:
        return f"{self.prefix}integration:{name}"

    def history(self, name: str) -> str:
        return f"{self.prefix}history:{name}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def reserve(self, name: str) -> str:
        return f"{self.prefix}reserve:{name}"

    def events(self, name: str) -> str:
        """The pub/sub channel a write of ``name`` announces its new version on."""
        return f"{self.prefix}events:{name}"

    # -- the authorization flow ------------------------------------------
    def state(self, state_id: str) -> str:
        return f"{self.prefix}state:{state_id}"

    def link_states(self, link_id: str) -> str:
        return f"{self.prefix}link:states:{link_id}"

    def link_spent(self, link_id: str) -> str:
        return f"{self.prefix}link:spent:{link_id}"

    def exchange(self, exchange_id: str) -> str:
        return f"{self.prefix}exchange:{exchange_id}"

    # -- metrics ----------------------------------------------------------
    def metrics(self, metric: str) -> str:
        return f"{self.prefix}metrics:{metric}"

    # -- the operators' index (lua/index.lua) -------------------------------
    def index_cell(self, cell: str) -> str:
        """The names of one ``<status>:<grant>:<provider>`` cell (``""`` gives the prefix of them all)."""
        return f"{self.prefix}index:cell:{cell}"

    @property
    def index_names(self) -> str:
        return f"{self.prefix}index:names"

    @property
    def index_cells(self) -> str:
        return f"{self.prefix}index:cells"

    # -- one of each --------------------------------------------------------
    @property
    def names(self) -> str:
        return f"{self.prefix}names"

    @property
    def schedule(self) -> str:
        return f"{self.prefix}schedule"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}inflight"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}outbox"

    @property
    def rate_slots(self) -> str:
        return f"{self.prefix}rate_slots"

    @property
    def capacity(self) -> str:
        return f"{self.prefix}beat:capacity"

    @property
    def given_key(self) -> str:
        return f"{self.prefix}given_key"

    @property
    def last_tick(self) -> str:
        return f"{self.prefix}beat:last_tick"
