"""The MongoDB layouts by name, and what a store asks of one (typing only)."""

from __future__ import annotations

from typing import Final, Protocol

from pymongo import IndexModel

from ...records import Change, Record, SessionInfo
from ._connect_mongo import ConnectMongo
from ._constants import Layout
from ._ops import Step, Work
from ._persession import PersessionDocuments


class MongoLayout(Protocol):
    """Where and how a session's document lives; each verb is a step or a flow for a transport to run.

    Each verb reads the clock where the store used to, before its command.
    """

    @property
    def name(self) -> Layout: ...
    @property
    def indexes(self) -> tuple[IndexModel, ...]: ...

    def load(self, sid: str) -> Step[Record | None]: ...
    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Work[Record | None]: ...
    def save(self, sid: str, record: Record, replaces: str | None) -> Work[None]: ...
    def merge(self, sid: str, change: Change, expires: float) -> Work[bool]: ...
    def touch(self, sid: str, expires: float) -> Work[bool]: ...
    def delete(self, sid: str) -> Step[None]: ...
    def index_user(self, user: str, sid: str) -> Step[None] | None: ...
    def user_sessions(self, user: str) -> Step[list[SessionInfo]]: ...
    def revoke_user(self, user: str) -> Work[list[str]]: ...


#: The layout classes by the name a store's ``layout`` takes (each has its ``indexes``).
LAYOUTS: Final[dict[Layout, type[PersessionDocuments | ConnectMongo]]] = {
    "persession": PersessionDocuments,
    "connect-mongo": ConnectMongo,
}
