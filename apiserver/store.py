"""The store: every object in one revision log on SQLAlchemy.

Design notes (the kine idea, reshaped for a small Python server)
----------------------------------------------------------------
* Two tables. `events` is the log: one row per write (ADDED, MODIFIED,
  DELETED) with the new value and the previous one; its auto-increment id IS
  the global revision, so `metadata.resourceVersion` of every object is the id
  of the event row that wrote it. `objects` holds the current value of every
  live key, for cheap gets and lists.
* Compare-and-swap is the database's job: an update is
  ``UPDATE objects SET ... WHERE key = :key AND revision = :expected`` and a
  create is an INSERT into a primary key; zero rows updated or an integrity
  error means someone else won, and the whole transaction (including the
  event row) is rolled back. No Python lock decides who wins.
* Writers are serialized by the database so that revisions commit in order
  (watchers may then read the log strictly by id without gaps appearing
  later): SQLite takes its write lock at BEGIN (``BEGIN IMMEDIATE``);
  PostgreSQL takes an EXCLUSIVE lock on ``events`` inside the transaction.
  Those two statements are the only dialect-specific SQL, chosen by dialect
  name; every query is plain SQLAlchemy Core.
* Values are stored without ``resourceVersion``; it is injected on read from
  the row's revision, so a value never has to be rewritten after its id is
  known.
* Durability: on SQLite every commit is fsynced before it is answered
  (``synchronous=FULL`` in WAL mode). With NORMAL a power cut may lose the
  last commits, and since the log's ids are the revisions, the next writes
  would reuse their numbers: an informer holding a lost revision would take
  the reissued ones for already seen and miss them silently. NORMAL stays
  available (``--sqlite-synchronous normal``) for those who accept that.
* Object size: a value is at most `MAX_OBJECT_BYTES` (1.5 MiB, etcd's default request
  limit, which bounds every Kubernetes object); `create`/`update` refuse a larger one with
  413 RequestEntityTooLarge naming the object (`check_object_size`), before any SQL.
* Allocations: the values the API server hands out from a range (cluster IPs, node ports)
  are rows of `allocations`, claimed and released in the transaction that writes their
  holder (`allocations=` / `release_allocations=`; AllocationTaken when another object holds
  a value). No second store to drift from the objects, so no repair loop is needed.
* Compaction deletes log rows older than a time window (but never the newest
  row) and remembers the highest compacted revision; a watch from an older
  revision gets 410 Gone. SQLite reclaims the pages with incremental vacuum.
* Reads at a revision (list pages, `list_range`): the value of a key at revision R
  is its current row when that was written at or before R; otherwise the first log
  row of the key after R holds it as `prev_value`, with its revision in
  `prev_revision` (none when that row is an ADDED: the key did not exist at R).
  Every row after R is kept while R is not compacted, so any such R can be read,
  a chunk at a time, each chunk its own short read transaction; an index on
  (key, id) finds each key's first row after R.
* Other processes writing the same database (several API servers on one
  PostgreSQL) are seen through polling of the log; in-process writes call the
  `on_commit` hook at once (the watch hub uses it to wake watchers).

Next: `apiserver.watch` (fan-out of the log to watchers), `apiserver.app`.
"""
from __future__ import annotations

import hmac
import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import (BigInteger, Column, bindparam, Index, Integer, MetaData, String, Table, Text, Float, create_engine, delete,
                        event as sa_event, func, insert, select, update, text)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as _SaIntegrityError, OperationalError as _SaOperationalError

from shoal.machinery.api import errors

log = logging.getLogger(__name__)

# Errors of either path to the database: SQLAlchemy's, and the sqlite3 driver's (`_SqliteOps`).
IntegrityError = (_SaIntegrityError, sqlite3.IntegrityError)
OperationalError = (_SaOperationalError, sqlite3.OperationalError)

metadata = MetaData()

objects_t = Table(
    "objects", metadata,
    Column("key", String(512), primary_key=True),
    Column("resource", String(64), nullable=False),
    Column("namespace", String(253), nullable=False, default=""),
    Column("name", String(253), nullable=False),
    Column("uid", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("create_revision", Integer, nullable=False),
    Column("value", Text, nullable=False),
    Column("owners", Text, nullable=False, default=""),   # owner uids, sorted, comma-joined
    Index("ix_objects_resource_ns", "resource", "namespace"),
    Index("ix_objects_uid", "uid"),
)

events_t = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(512), nullable=False),
    Column("resource", String(64), nullable=False),
    Column("namespace", String(253), nullable=False, default=""),
    Column("type", String(16), nullable=False),
    Column("value", Text, nullable=False),
    Column("prev_value", Text, nullable=True),
    Column("ts", Float, nullable=False),
    # The revision of prev_value (the object's resourceVersion before this write): a list read
    # at an older revision (`list_range`) answers prev_value with it. NULL on rows written
    # before the column existed, and on ADDED rows.
    Column("prev_revision", Integer, nullable=True),
    Index("ix_events_resource_id", "resource", "id"),
    Index("ix_events_key_id", "key", "id"),          # the first write of each key after a revision
)

owners_t = Table(
    "owner_refs", metadata,
    Column("owner_uid", String(64), primary_key=True),
    Column("key", String(512), primary_key=True),
)

meta_t = Table(
    "meta", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

credentials_t = Table(
    "credentials", metadata,
    Column("token_hash", String(128), primary_key=True),
    Column("role", String(32), nullable=False),      # admin | join | node
    Column("subject", String(253), nullable=False, default=""),   # node name for role=node
    Column("created", Float, nullable=False),
)

# The node password a node sent at its first join (k3s' scheme): a later join under the
# same name must present it again (apiserver.auth.join_node).
node_passwords_t = Table(
    "node_passwords", metadata,
    Column("node", String(253), primary_key=True),
    Column("password_hash", String(128), nullable=False),
    Column("created", Float, nullable=False),
)

# Where the API server reaches each node's agent (docs/security.md "API server to agent"):
# the address its join came from (the TCP peer, never an address the node wrote) and the
# SHA-256 of the serving certificate key it registered then (apiserver.nodecerts). Written
# only by the join and certificate endpoints; a node's own Node object cannot change it.
# A table added after databases existed: `metadata.create_all` creates it in an older one.
node_endpoints_t = Table(
    "node_endpoints", metadata,
    Column("node", String(253), primary_key=True),
    Column("address", String(64), nullable=False),
    Column("key_sha256", String(64), nullable=False),
    Column("not_after", Float, nullable=False),      # the serving certificate's expiry (epoch seconds)
    Column("created", Float, nullable=False),
)


@dataclass(frozen=True)
class NodeEndpoint:
    """A node's verified registration (`node_endpoints_t`)."""
    node: str
    address: str
    key_sha256: str
    not_after: float


# What the API server hands out from a range and must never hand out twice: cluster IPs and
# node ports (apiserver.allocation). One row per value in use, naming the object that holds it,
# written in the same transaction as that object (`create`/`update`/`delete` with
# `allocations=`): a value is held exactly as long as its holder is stored, a crash or a
# restart cannot leak or double one, and a dry run (which never writes) claims nothing.
allocations_t = Table(
    "allocations", metadata,
    Column("pool", String(32), primary_key=True),      # "clusterip" | "nodeport" (apiserver.allocation)
    Column("value", BigInteger, primary_key=True),     # an IPv4 address as an integer, a port
    Column("key", String(512), nullable=False),        # the holder's object key
    Index("ix_allocations_key", "key"),
)
Allocation = tuple[str, int]     # (pool, value)


class AllocationTaken(Exception):
    """A write claimed a value that another object holds; nothing was written. The caller
    (`apiserver.allocation`) picks another value or answers 422."""

    def __init__(self, pool: str, value: int, holder: str):
        super().__init__(f"{pool} {value} is held by {holder}")
        self.pool, self.value, self.holder = pool, value, holder


# `PRAGMA synchronous` values a Store accepts (the design notes say why FULL is the default).
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


class _NullLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_INSERT_EVENT = insert(events_t)
_INSERT_OBJECT = insert(objects_t)
_INSERT_OWNER = insert(owners_t)
_SELECT_CURRENT = select(objects_t.c.value, objects_t.c.revision, objects_t.c.owners, objects_t.c.uid).where(
    objects_t.c.key == bindparam("key"))
_SELECT_COMPACTED = select(meta_t.c.value).where(meta_t.c.name == "compacted_revision")
_SQLITE_GET = "SELECT value, revision FROM objects WHERE key = ?"
_EVENT_COLUMNS = "id, key, resource, namespace, type, value, prev_value, ts"   # what events_after reads
_SQLITE_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?"
_SQLITE_EVENTS_BY_RESOURCE = f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? AND resource = ? ORDER BY id LIMIT ?"
_SQLITE_COMPACTED = "SELECT value FROM meta WHERE name = 'compacted_revision'"
_SQLITE_CURRENT = "SELECT value, revision, owners, uid FROM objects WHERE key = ?"
_SQLITE_INSERT_EVENT = ("INSERT INTO events (key, resource, namespace, type, value, prev_value, prev_revision, "
                        "ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_INSERT_OBJECT = ("INSERT INTO objects (key, resource, namespace, name, uid, revision, create_revision, "
                         "value, owners) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_UPDATE_OBJECT = "UPDATE objects SET value = ?, revision = ?, owners = ? WHERE key = ? AND revision = ?"
_SQLITE_INSERT_OWNER = "INSERT INTO owner_refs (owner_uid, key) VALUES (?, ?)"


class _CoreOps:
    """The statements of the object writes, on a SQLAlchemy connection (any database)."""

    def __init__(self, conn, clock: Callable[[], float]):
        self.conn, self.clock = conn, clock

    def current(self, key: str) -> tuple[str, int, str, str] | None:
        """(value, revision, owners, uid) of a live key."""
        row = self.conn.execute(_SELECT_CURRENT, {"key": key}).first()
        return None if row is None else (row.value, row.revision, row.owners, row.uid)

    def append(self, key: str, resource: str, namespace: str, type_: str, value: str, prev: str | None,
               prev_revision: int | None) -> int:
        # Parameters passed to a fixed statement (not `.values(...)`) keep SQLAlchemy's compiled cache hot.
        res = self.conn.execute(_INSERT_EVENT, {"key": key, "resource": resource, "namespace": namespace,
                                                "type": type_, "value": value, "prev_value": prev,
                                                "prev_revision": prev_revision, "ts": self.clock()})
        return int(res.inserted_primary_key[0])

    def insert_object(self, key: str, resource: str, namespace: str, name: str, uid: str, rev: int, value: str,
                      owners: str) -> None:
        self.conn.execute(_INSERT_OBJECT, {"key": key, "resource": resource, "namespace": namespace, "name": name,
                                           "uid": uid, "revision": rev, "create_revision": rev, "value": value,
                                           "owners": owners})

    def update_object(self, key: str, expected: int, value: str, rev: int, owners: str) -> int:
        return self.conn.execute(_UPDATE_OBJECT, {"b_key": key, "b_expected": expected, "b_value": value,
                                                  "b_revision": rev, "b_owners": owners}).rowcount

    def delete_object(self, key: str, expected: int | None) -> int:
        q = delete(objects_t).where(objects_t.c.key == key)
        if expected is not None:
            q = q.where(objects_t.c.revision == expected)
        return self.conn.execute(q).rowcount

    def delete_owners(self, key: str) -> None:
        self.conn.execute(delete(owners_t).where(owners_t.c.key == key))

    def insert_owner(self, uid: str, key: str) -> None:
        self.conn.execute(_INSERT_OWNER, {"owner_uid": uid, "key": key})

    def allocations_of(self, key: str) -> set[Allocation]:
        rows = self.conn.execute(select(allocations_t.c.pool, allocations_t.c.value)
                                 .where(allocations_t.c.key == key)).all()
        return {(r.pool, int(r.value)) for r in rows}

    def allocation_holder(self, pool: str, value: int) -> str | None:
        return self.conn.execute(select(allocations_t.c.key).where(allocations_t.c.pool == pool,
                                                                   allocations_t.c.value == value)).scalar()

    def claim(self, pool: str, value: int, key: str) -> None:
        self.conn.execute(insert(allocations_t).values(pool=pool, value=value, key=key))

    def release(self, pool: str, value: int) -> None:
        self.conn.execute(delete(allocations_t).where(allocations_t.c.pool == pool, allocations_t.c.value == value))

    def release_all(self, key: str) -> None:
        self.conn.execute(delete(allocations_t).where(allocations_t.c.key == key))


class _SqliteOps:
    """The same statements straight on the sqlite3 driver: on a local SQLite file a write is
    mostly SQLAlchemy's statement and result bookkeeping otherwise (measured: an event's
    create 1.1 -> 0.8 ms of server CPU together with the pump's raw read)."""

    def __init__(self, c, clock: Callable[[], float]):
        self.c, self.clock = c, clock

    def current(self, key: str) -> tuple[str, int, str, str] | None:
        return self.c.execute(_SQLITE_CURRENT, (key,)).fetchone()

    def append(self, key: str, resource: str, namespace: str, type_: str, value: str, prev: str | None,
               prev_revision: int | None) -> int:
        return self.c.execute(_SQLITE_INSERT_EVENT, (key, resource, namespace, type_, value, prev, prev_revision,
                                                     self.clock())).lastrowid

    def insert_object(self, key: str, resource: str, namespace: str, name: str, uid: str, rev: int, value: str,
                      owners: str) -> None:
        self.c.execute(_SQLITE_INSERT_OBJECT, (key, resource, namespace, name, uid, rev, rev, value, owners))

    def update_object(self, key: str, expected: int, value: str, rev: int, owners: str) -> int:
        return self.c.execute(_SQLITE_UPDATE_OBJECT, (value, rev, owners, key, expected)).rowcount

    def delete_object(self, key: str, expected: int | None) -> int:
        if expected is None:
            return self.c.execute("DELETE FROM objects WHERE key = ?", (key,)).rowcount
        return self.c.execute("DELETE FROM objects WHERE key = ? AND revision = ?", (key, expected)).rowcount

    def delete_owners(self, key: str) -> None:
        self.c.execute("DELETE FROM owner_refs WHERE key = ?", (key,))

    def insert_owner(self, uid: str, key: str) -> None:
        self.c.execute(_SQLITE_INSERT_OWNER, (uid, key))

    def allocations_of(self, key: str) -> set[Allocation]:
        return {(p, int(v)) for p, v in self.c.execute("SELECT pool, value FROM allocations WHERE key = ?", (key,))}

    def allocation_holder(self, pool: str, value: int) -> str | None:
        row = self.c.execute("SELECT key FROM allocations WHERE pool = ? AND value = ?", (pool, value)).fetchone()
        return row[0] if row else None

    def claim(self, pool: str, value: int, key: str) -> None:
        self.c.execute("INSERT INTO allocations (pool, value, key) VALUES (?, ?, ?)", (pool, value, key))

    def release(self, pool: str, value: int) -> None:
        self.c.execute("DELETE FROM allocations WHERE pool = ? AND value = ?", (pool, value))

    def release_all(self, key: str) -> None:
        self.c.execute("DELETE FROM allocations WHERE key = ?", (key,))
_UPDATE_OBJECT = update(objects_t).where(objects_t.c.key == bindparam("b_key"),
                                         objects_t.c.revision == bindparam("b_expected")).values(
    value=bindparam("b_value"), revision=bindparam("b_revision"), owners=bindparam("b_owners"))


def object_key(resource: str, namespace: str | None, name: str) -> str:
    return f"{resource}/{namespace or ''}/{name}"


def _hold(ops, key: str, wanted: "set[Allocation]") -> None:
    """Inside a write: make `wanted` exactly the values `key` holds. Values it no longer
    wants are released, new ones claimed; one another object holds raises AllocationTaken
    (and the transaction rolls back). Writers are serialized, so the holder check and the
    claim see the same table; the primary key backs them up."""
    held = ops.allocations_of(key)
    for pool, value in sorted(held - wanted):
        ops.release(pool, value)
    for pool, value in sorted(wanted - held):
        holder = ops.allocation_holder(pool, value)
        if holder is not None:
            raise AllocationTaken(pool, value, holder)
        ops.claim(pool, value, key)


MAX_OBJECT_BYTES = 1536 * 1024     # etcd's --max-request-bytes default: no Kubernetes object is larger


def check_object_size(resource: str, obj: dict, value: str) -> None:
    """Raise RequestEntityTooLarge (413) when `value` (the serialized object) is over
    MAX_OBJECT_BYTES in UTF-8."""
    if len(value) * 4 <= MAX_OBJECT_BYTES:          # cannot be over: skip the encoding
        return
    size = len(value.encode())
    if size > MAX_OBJECT_BYTES:
        md = obj.get("metadata") or {}
        where = f' in namespace "{md["namespace"]}"' if md.get("namespace") else ""
        raise errors.RequestEntityTooLarge(
            f'Request entity too large: {resource} "{md.get("name", "")}"{where} would be {size} bytes when '
            f'stored; the limit is {MAX_OBJECT_BYTES} bytes (1.5 MiB, etcd\'s request limit)',
            details={"name": md.get("name", ""), "kind": resource})


@dataclass
class Event:
    """One row of the log, decoded. `object` carries its resourceVersion."""
    revision: int
    type: str
    resource: str
    namespace: str
    object: dict
    prev: dict | None
    # Serialized watch lines by event type, shared by every watcher that sends this event.
    lines: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        md = self.object.get("metadata", {})
        return object_key(self.resource, md.get("namespace"), md.get("name", ""))


def _with_rv(value: str, revision: int) -> dict:
    obj = json.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def _strip_rv(obj: dict) -> str:
    md = obj.get("metadata") or {}
    if "resourceVersion" in md:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in md.items() if k != "resourceVersion"}
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)


def _owner_uids(obj: dict) -> list[str]:
    return sorted({r.get("uid") for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if r.get("uid")})


@dataclass
class ListChunk:
    """One read of `Store.list_range`: `rows` (key, value without resourceVersion, revision)
    in key order, as they were at `revision`. `last` is the key up to which the range has
    been read (go on from `last + "\\x00"`); None when the range is read to its end."""
    rows: list[tuple[str, str, int]]
    revision: int
    last: str | None


def _merge_chunk(current: list, before: list, changed_last: str | None, limit: int, at: int) -> ListChunk:
    """The rows of a `list_range` read from its two sources, each cut at `limit` keys: the
    objects unchanged since `at` (`current`) and the values at `at` of those changed since
    (`before`, from the log; `changed_last` is the last key that read reached when it was
    cut, else None). Past the smaller of the two cut points one source was not read, so the
    answer ends there."""
    bounds = [k for k in ((current[-1][0] if len(current) >= limit else None), changed_last) if k is not None]
    bound = min(bounds) if bounds else None
    merged = sorted(current + before)
    if bound is not None:
        merged = [r for r in merged if r[0] <= bound]
    if len(merged) > limit:
        return ListChunk(merged[:limit], at, merged[limit - 1][0])
    return ListChunk(merged, at, bound)


class FutureRevision(Exception):
    """A read at a revision the log has not reached yet (`current` is the newest)."""

    def __init__(self, revision: int, current: int):
        super().__init__(f"revision {revision} is past the newest, {current}")
        self.revision, self.current = revision, current


class Store:
    """The revision log. Thread-safe; every method is one database transaction.

    `on_commit(revision)` is called after every successful write, from the
    writer's thread.
    """

    def __init__(self, url: str, *, busy_timeout_ms: int = 10000, echo: bool = False,
                 clock: Callable[[], float] = time.time, sqlite_synchronous: str = "full"):
        sync = sqlite_synchronous.upper()
        if sync not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite synchronous {sqlite_synchronous!r}: expected one of "
                             f"{', '.join(s.lower() for s in SQLITE_SYNCHRONOUS)}")
        self.url = url
        self.clock = clock
        self.on_commit: list[Callable[[int], None]] = []
        kw: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kw["connect_args"] = {"timeout": busy_timeout_ms / 1000, "check_same_thread": False,
                                  "isolation_level": None}
            from sqlalchemy.pool import QueuePool
            kw["poolclass"] = QueuePool
            kw["pool_size"] = 8
            kw["max_overflow"] = 16
            # No ROLLBACK when a connection goes back to the pool: in autocommit mode (above)
            # a connection holds a transaction only inside our own BEGIN…COMMIT/ROLLBACK
            # blocks, each closed before the connection is returned. The reset was ≈ 2 % of
            # the server's CPU (every GET checks a connection out and back in).
            kw["pool_reset_on_return"] = None
        else:
            kw["pool_size"] = 8
            kw["max_overflow"] = 16
            kw["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kw)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            @sa_event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _rec):  # noqa: ANN001
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
                cur.execute("PRAGMA journal_mode=WAL")
                # FULL in WAL mode: the WAL is fsynced at every commit, so a write we answered
                # survives a power cut or OS crash too. NORMAL (opt-in) survives only the death
                # of this process: a power cut can roll the last commits back, and their ids,
                # which ARE revisions, would be handed out again to different writes — a
                # watcher holding the lost revision would skip the new ones without a 410.
                cur.execute(f"PRAGMA synchronous={sync}")
                cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @sa_event.listens_for(self.engine, "begin")
            def _sqlite_begin(conn):  # noqa: ANN001
                # Writers take the lock at BEGIN so that no two transactions interleave read and
                # write (SQLite's deferred BEGIN would fail later with SQLITE_BUSY instead).
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else _NullLock()
        self._writer = None
        self._raw_writer = None        # SQLite: the pool connection _write_ops keeps for its writes
        metadata.create_all(self.engine)
        self._upgrade_schema()
        self._compacted = self._read_meta_int("compacted_revision")

    # ------------------------------------------------------------------ plumbing
    def _upgrade_schema(self) -> None:
        """Columns added after a database was created (portable ALTER TABLE)."""
        from sqlalchemy import inspect
        cols = {c["name"] for c in inspect(self.engine).get_columns("objects")}
        if "owners" not in cols:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("ALTER TABLE objects ADD COLUMN owners TEXT NOT NULL DEFAULT ''")
        if "prev_revision" not in {c["name"] for c in inspect(self.engine).get_columns("events")}:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("ALTER TABLE events ADD COLUMN prev_revision INTEGER")
        # create_all makes the indexes of new tables only
        for ix in events_t.indexes:
            ix.create(self.engine, checkfirst=True)

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._drop_raw_writer()
        self.engine.dispose()

    def _drop_raw_writer(self) -> None:
        if self._raw_writer is not None:
            fairy, self._raw_writer = self._raw_writer, None
            try:
                fairy.invalidate()     # never back to the pool: its state is unknown
            except Exception:  # noqa: BLE001 — already broken
                pass

    @contextmanager
    def _write_ops(self):
        """One write transaction with the writers' lock held; yields the statements (`_CoreOps`
        or, on SQLite, `_SqliteOps`). Commits when the block ends, rolls back if it raises."""
        if self.dialect != "sqlite":
            with self._write_conn() as conn, conn.begin():
                self._serialize_writers(conn)
                yield _CoreOps(conn, self.clock)
            return
        with self._write_lock:
            for attempt in (1, 2):
                if self._raw_writer is None:
                    self._raw_writer = self.engine.raw_connection()   # the pool's connect hook set the pragmas
                c = self._raw_writer.driver_connection
                try:
                    c.execute("BEGIN IMMEDIATE")
                    break
                except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
                    self._drop_raw_writer()          # closed under us: once more on a new connection
                    if attempt == 2:
                        raise
                except BaseException:
                    self._drop_raw_writer()
                    raise
            try:
                yield _SqliteOps(c, self.clock)
            except BaseException:
                try:
                    c.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 — the connection is unusable: replace it
                    self._drop_raw_writer()
                raise
            try:
                c.execute("COMMIT")
            except BaseException:
                try:
                    c.execute("ROLLBACK")
                except Exception:  # noqa: BLE001
                    pass
                self._drop_raw_writer()
                raise

    @contextmanager
    def _write_conn(self):
        # In-process writers queue on a lock before BEGIN IMMEDIATE. The database still
        # decides every compare-and-swap (WHERE revision = ?); the lock only replaces
        # SQLite's busy handler, which sleeps in steps of up to 100 ms, with a FIFO-ish
        # hand-over (measured: p99 of 8 concurrent writers from ~200 ms to a few ms).
        # Writers in other processes still meet the busy timeout.
        # On SQLite (one writer at a time anyway) the writer keeps its connection: no pool
        # checkout per write. A failure other than a refused request drops it.
        with self._write_lock:
            if self.dialect != "sqlite":
                conn = self.engine.connect()
                conn.info["write"] = True
                try:
                    yield conn
                finally:
                    conn.close()
                return
            conn = self._writer
            if conn is None or conn.closed or conn.invalidated:
                conn = self._writer = self.engine.connect()
                conn.info["write"] = True
            try:
                yield conn
            except errors.ApiError:
                raise
            except BaseException:
                self._writer = None
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 — already broken
                    pass
                raise

    def _read_conn(self):
        conn = self.engine.connect()
        conn.info["write"] = False
        return conn

    def _serialize_writers(self, conn) -> None:
        if self.dialect == "postgresql":
            conn.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))

    def _read_meta_int(self, name: str) -> int:
        with self._read_conn() as conn, conn.begin():
            v = conn.execute(select(meta_t.c.value).where(meta_t.c.name == name)).scalar()
        return int(v) if v else 0

    def _notify(self, revision: int) -> None:
        for cb in list(self.on_commit):
            try:
                cb(revision)
            except Exception:  # a broken listener must not fail a committed write
                log.exception("on_commit listener failed")

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        # SQLite may still answer "database is locked" past the busy timeout under heavy
        # contention; retrying the whole transaction is safe because it rolled back.
        for attempt in range(20):
            try:
                return fn()
            except OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(min(0.005 * 2 ** attempt, 0.25))
        return fn()

    # ------------------------------------------------------------------ reads
    @property
    def compacted_revision(self) -> int:
        return self._compacted

    def current_revision(self) -> int:
        with self._read_conn() as conn, conn.begin():
            return int(conn.execute(select(func.max(events_t.c.id))).scalar() or 0)

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        key = object_key(resource, namespace, name)
        if self.dialect == "sqlite":
            # The hottest read (every update and delete starts with one). One SELECT is its
            # own consistent snapshot in SQLite, so it goes straight to the driver on a pooled
            # connection: SQLAlchemy's connection and transaction bookkeeping cost ~8x the
            # query itself (measured 167 µs -> 18 µs per get).
            raw = self.engine.raw_connection()
            try:
                row = raw.driver_connection.execute(_SQLITE_GET, (key,)).fetchone()
            finally:
                raw.close()
            return _with_rv(row[0], row[1]) if row else None
        with self._read_conn() as conn, conn.begin():
            row = conn.execute(select(objects_t.c.value, objects_t.c.revision)
                               .where(objects_t.c.key == key)).first()
        return _with_rv(row.value, row.revision) if row else None

    def last_logged(self, resource: str, namespace: str | None, name: str) -> dict | None:
        """The last value the log holds for a key (a deleted object's last value while its
        DELETED row is not compacted), with its resourceVersion; None when the log has none."""
        key = object_key(resource, namespace, name)
        with self._read_conn() as conn, conn.begin():
            row = conn.execute(select(events_t.c.id, events_t.c.value).where(events_t.c.key == key)
                               .order_by(events_t.c.id.desc()).limit(1)).first()
        return _with_rv(row.value, row.id) if row else None

    def get_by_uid(self, uid: str) -> tuple[str, dict] | None:
        with self._read_conn() as conn, conn.begin():
            row = conn.execute(select(objects_t.c.resource, objects_t.c.value, objects_t.c.revision)
                               .where(objects_t.c.uid == uid)).first()
        return (row.resource, _with_rv(row.value, row.revision)) if row else None

    def list(self, resource: str, namespace: str | None = None) -> tuple[list[dict], int]:
        """All live objects of a resource (in a namespace), and the revision the list is consistent at."""
        with self._read_conn() as conn, conn.begin():
            rev = int(conn.execute(select(func.max(events_t.c.id))).scalar() or 0)
            q = select(objects_t.c.value, objects_t.c.revision).where(objects_t.c.resource == resource)
            if namespace:
                q = q.where(objects_t.c.namespace == namespace)
            rows = conn.execute(q.order_by(objects_t.c.namespace, objects_t.c.name)).all()
        return [_with_rv(r.value, r.revision) for r in rows], rev

    def page(self, resource: str, *, after_key: str = "", limit: int = 500) -> list[dict]:
        """Up to `limit` live objects of a resource whose keys sort after `after_key`, in key
        order: a scan in bounded memory (pass the last object's `object_key` to go on)."""
        with self._read_conn() as conn, conn.begin():
            rows = conn.execute(select(objects_t.c.value, objects_t.c.revision)
                                .where(objects_t.c.resource == resource, objects_t.c.key > after_key)
                                .order_by(objects_t.c.key).limit(limit)).all()
        return [_with_rv(r.value, r.revision) for r in rows]

    # -- lists at a revision (apiserver.listing) -------------------------------------------
    # The value of key k at revision R is the current row when its revision is <= R; else the
    # first log row of k after R holds it as prev_value (prev_revision), unless that row is an
    # ADDED (k did not exist at R). Every log row after R is kept while R >= the compacted
    # revision, so any revision not yet compacted can be read, one chunk at a time, each chunk
    # in a read transaction of its own: a long list holds no snapshot open between chunks.

    @staticmethod
    def key_range(resource: str, namespace: str | None) -> tuple[str, str]:
        """(prefix, end): the keys of `resource` in `namespace` ("": a cluster-scoped resource,
        None: every namespace) are the strings s with prefix <= s < end. Keys sort as
        Kubernetes' etcd keys do: by bytes."""
        prefix = f"{resource}/{namespace}/" if namespace is not None else f"{resource}/"
        return prefix, prefix[:-1] + chr(ord("/") + 1)

    def _ordered(self, col):
        # Byte order on PostgreSQL too (its default collation sorts by locale rules).
        return col.collate("C") if self.dialect == "postgresql" else col

    @contextmanager
    def _snapshot(self):
        """A read transaction whose statements all see one state of the database: SQLite's
        WAL read transaction is a snapshot; PostgreSQL needs REPEATABLE READ for that."""
        conn = self._read_conn()
        try:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
        finally:
            conn.close()

    def _from(self, col, start: str, prefix: str):
        """`col >= start` (from `prefix` when start is ""). A start ending in NUL is the successor
        of a key (Kubernetes' continue keys): `col > key`, so no NUL reaches the database
        (PostgreSQL's text cannot hold one; keys never do)."""
        col = self._ordered(col)
        if start.endswith("\x00"):
            return col > max(start[:-1], prefix)
        return col >= max(start, prefix)

    def list_range(self, resource: str, namespace: str | None, *, start: str = "", revision: int | None = None,
                   limit: int = 500) -> "ListChunk":
        """Up to `limit` objects of `resource` in `namespace` (`key_range`) as they were at `revision` (None:
        the current one, read in the same snapshot), whose keys are >= `start` (`_from`), in key
        order, as (key, value without resourceVersion, revision) rows. Raises Gone when
        `revision` is compacted (or written before the log kept prev_revision), FutureRevision
        when it is past the newest. `start` must hold no NUL but a final one."""
        prefix, end = self.key_range(resource, namespace)
        key, rev_col = self._ordered(objects_t.c.key), objects_t.c.revision
        with self._snapshot() as conn:
            latest = int(conn.execute(select(func.max(events_t.c.id))).scalar() or 0)
            done = conn.execute(_SELECT_COMPACTED).scalar()
            compacted = max(self._compacted, int(done or 0))
            at = latest if revision is None else revision
            if at > latest:
                raise FutureRevision(at, latest)
            if at < compacted:
                raise errors.Gone(f"too old resource version: {at} ({compacted})")
            q = select(objects_t.c.key, objects_t.c.value, rev_col).where(
                self._from(objects_t.c.key, start, prefix), key < end)
            if at < latest:
                q = q.where(rev_col <= at)
            current = [tuple(r) for r in conn.execute(q.order_by(key).limit(limit))]
            before: list[tuple[str, str, int]] = []
            changed_last, changed_n = None, 0
            if at < latest:
                ekey = self._ordered(events_t.c.key)
                first = (select(events_t.c.key, func.min(events_t.c.id).label("first"))
                         .where(self._from(events_t.c.key, start, prefix), ekey < end, events_t.c.id > at)
                         .group_by(events_t.c.key).order_by(ekey).limit(limit).subquery())
                rows = conn.execute(select(first.c.key, events_t.c.type, events_t.c.prev_value,
                                           events_t.c.prev_revision)
                                    .join(events_t, events_t.c.id == first.c.first)).all()
                changed_n = len(rows)
                for k, type_, prev_value, prev_revision in rows:
                    changed_last = k if changed_last is None else max(changed_last, k)
                    if type_ == "ADDED":
                        continue            # created after `at`
                    if prev_value is None or prev_revision is None:
                        raise errors.Gone(f"too old resource version: {at} (the log before the upgrade that "
                                          f"added prev_revision cannot be read at a revision)")
                    before.append((k, prev_value, int(prev_revision)))
        if done is not None and int(done) > self._compacted:
            self._compacted = int(done)
        return _merge_chunk(current, before, changed_last if changed_n >= limit else None, limit, at)

    def count_range(self, resource: str, namespace: str | None, *, start: str, revision: int) -> int:
        """How many objects of `resource` (in `namespace`) with keys >= `start` existed at
        `revision` (Kubernetes' remainingItemCount). Raises Gone as `list_range` does."""
        prefix, end = self.key_range(resource, namespace)
        key = self._ordered(objects_t.c.key)
        with self._snapshot() as conn:
            done = conn.execute(_SELECT_COMPACTED).scalar()
            if revision < max(self._compacted, int(done or 0)):
                raise errors.Gone(f"too old resource version: {revision} ({done})")
            n = int(conn.execute(select(func.count()).select_from(objects_t)
                                 .where(self._from(objects_t.c.key, start, prefix), key < end,
                                        objects_t.c.revision <= revision)).scalar() or 0)
            ekey = self._ordered(events_t.c.key)
            first = (select(func.min(events_t.c.id).label("first"))
                     .where(self._from(events_t.c.key, start, prefix), ekey < end, events_t.c.id > revision)
                     .group_by(events_t.c.key).subquery())
            n += int(conn.execute(select(func.count()).select_from(first)
                                  .join(events_t, events_t.c.id == first.c.first)
                                  .where(events_t.c.type != "ADDED")).scalar() or 0)
        return n

    def allocations(self, pool: str) -> dict[int, str]:
        """The values of `pool` in use: value -> the key of the object holding it."""
        with self._read_conn() as conn, conn.begin():
            rows = conn.execute(select(allocations_t.c.value, allocations_t.c.key)
                                .where(allocations_t.c.pool == pool)).all()
        return {int(r.value): r.key for r in rows}

    def dependents(self, owner_uid: str) -> list[tuple[str, dict]]:
        """(resource, object) of every live object whose ownerReferences name owner_uid."""
        with self._read_conn() as conn, conn.begin():
            rows = conn.execute(
                select(objects_t.c.resource, objects_t.c.value, objects_t.c.revision)
                .join(owners_t, owners_t.c.key == objects_t.c.key)
                .where(owners_t.c.owner_uid == owner_uid)).all()
        return [(r.resource, _with_rv(r.value, r.revision)) for r in rows]

    def events_after(self, revision: int, *, limit: int = 1000, resource: str | None = None) -> list[Event]:
        """Log rows strictly after `revision`, oldest first. Raises Gone when compacted."""
        if revision < self._compacted:
            raise errors.Gone(f"too old resource version: {revision} ({self._compacted})")
        if self.dialect == "sqlite":
            # The watch pump reads the log after every commit, on the event loop: straight to
            # the driver, as `get` does (SQLAlchemy's connection, transaction and result
            # bookkeeping cost several times the two queries).
            raw = self.engine.raw_connection()
            try:
                c = raw.driver_connection
                c.execute("BEGIN")
                try:
                    rows = c.execute(_SQLITE_EVENTS_BY_RESOURCE if resource else _SQLITE_EVENTS,
                                     (revision, resource, limit) if resource else (revision, limit)).fetchall()
                    done_row = c.execute(_SQLITE_COMPACTED).fetchone()
                finally:
                    c.execute("COMMIT")
            finally:
                raw.close()
            done = done_row[0] if done_row else None
        else:
            with self._read_conn() as conn, conn.begin():
                c = events_t.c
                q = select(c.id, c.key, c.resource, c.namespace, c.type, c.value, c.prev_value, c.ts
                           ).where(c.id > revision)
                if resource:
                    q = q.where(events_t.c.resource == resource)
                rows = conn.execute(q.order_by(events_t.c.id).limit(limit)).all()
                # In the same snapshot: how far the log is compacted, by any server process (another
                # one sharing the database compacts without telling us).
                done = conn.execute(_SELECT_COMPACTED).scalar()
        if done is not None and int(done) > self._compacted:
            self._compacted = int(done)
        # Re-check after reading: a compaction that ran meanwhile may have removed rows we needed.
        if revision < self._compacted:
            raise errors.Gone(f"too old resource version: {revision} ({self._compacted})")
        out = []
        for rid, _key, res, ns, type_, value, prev_value, _ts in rows:
            obj = _with_rv(value, rid)
            prev = json.loads(prev_value) if prev_value else None
            out.append(Event(rid, type_, res, ns, obj, prev))
        return out

    # ------------------------------------------------------------------ writes
    def create(self, resource: str, obj: dict, *, allocations: "set[Allocation] | None" = None) -> dict:
        """Insert a new object. Raises AlreadyExists if the key is taken, RequestEntityTooLarge if
        the object is over MAX_OBJECT_BYTES. `allocations`: the values (pool, value) the object
        holds, claimed in the same transaction (AllocationTaken, nothing written, when another
        object holds one)."""
        md = obj["metadata"]
        ns = md.get("namespace") or ""
        key = object_key(resource, ns, md["name"])
        value = _strip_rv(obj)
        check_object_size(resource, obj, value)
        owners = _owner_uids(obj)

        def tx() -> int:
            try:
                with self._write_ops() as ops:
                    rev = ops.append(key, resource, ns, "ADDED", value, None, None)
                    ops.insert_object(key, resource, ns, md["name"], md.get("uid", ""), rev, value, ",".join(owners))
                    for uid in owners:
                        ops.insert_owner(uid, key)
                    if allocations is not None:
                        _hold(ops, key, allocations)
                    return rev
            except IntegrityError:
                raise errors.AlreadyExists(f'{resource} "{md["name"]}" already exists',
                                           details={"name": md["name"], "kind": resource}) from None

        rev = self._retrying(tx)
        self._notify(rev)
        return _with_rv(value, rev)

    def update(self, resource: str, obj: dict, *, expected_revision: int,
               allocations: "set[Allocation] | None" = None) -> dict:
        """Replace an object if its current revision is `expected_revision` (compare-and-swap).
        Raises NotFound if absent, Conflict if the revision moved on, RequestEntityTooLarge if the
        object is over MAX_OBJECT_BYTES. `allocations` (None: unchanged): every value the object
        holds after the write; the others it held are released, new ones claimed, in the same
        transaction (AllocationTaken, nothing written, when another object holds one)."""
        md = obj["metadata"]
        ns = md.get("namespace") or ""
        key = object_key(resource, ns, md["name"])
        value = _strip_rv(obj)
        check_object_size(resource, obj, value)
        owners = _owner_uids(obj)
        conflict = errors.Conflict(
            f'Operation cannot be fulfilled on {resource} "{md["name"]}": the object has been '
            f'modified; please apply your changes to the latest version and try again',
            details={"name": md["name"], "kind": resource})

        def tx() -> int:
            with self._write_ops() as ops:
                cur = ops.current(key)
                if cur is None:
                    raise errors.NotFound(f'{resource} "{md["name"]}" not found',
                                          details={"name": md["name"], "kind": resource})
                cur_value, cur_rev, cur_owners, _uid = cur
                if cur_rev != expected_revision:
                    raise conflict
                rev = ops.append(key, resource, ns, "MODIFIED", value, cur_value, cur_rev)
                # the database's word on the compare-and-swap
                if ops.update_object(key, expected_revision, value, rev, ",".join(owners)) != 1:
                    raise conflict
                if ",".join(owners) != cur_owners:      # owner_refs kept in step, only when they changed
                    if cur_owners:
                        ops.delete_owners(key)
                    for uid in owners:
                        ops.insert_owner(uid, key)
                if allocations is not None:
                    _hold(ops, key, allocations)
                return rev

        rev = self._retrying(tx)
        self._notify(rev)
        return _with_rv(value, rev)

    def delete(self, resource: str, namespace: str | None, name: str, *,
               expected_revision: int | None = None, expected_uid: str | None = None,
               release_allocations: bool = False) -> dict:
        """Remove an object, logging a DELETED event that carries its last value.
        With expected_revision/expected_uid the delete is conditional (Conflict otherwise).
        `release_allocations`: free the values the object held, in the same transaction."""
        ns = namespace or ""
        key = object_key(resource, ns, name)

        def tx() -> tuple[int, str]:
            with self._write_ops() as ops:
                cur = ops.current(key)
                if cur is None:
                    raise errors.NotFound(f'{resource} "{name}" not found', details={"name": name, "kind": resource})
                cur_value, cur_rev, _owners, cur_uid = cur
                if expected_uid is not None and cur_uid != expected_uid:
                    raise errors.Conflict(f'Precondition failed: UID in precondition: {expected_uid}, '
                                          f'UID in object meta: {cur_uid}')
                rev = ops.append(key, resource, ns, "DELETED", cur_value, cur_value, cur_rev)
                if ops.delete_object(key, expected_revision) != 1:
                    raise errors.Conflict(f'Operation cannot be fulfilled on {resource} "{name}": '
                                          f'the object has been modified')
                ops.delete_owners(key)
                if release_allocations:
                    ops.release_all(key)
                return rev, cur_value

        rev, value = self._retrying(tx)
        self._notify(rev)
        return _with_rv(value, rev)

    def delete_batch(self, resource: str, items: list[tuple[str | None, str, int]]) -> list[dict]:
        """Remove several objects, given as (namespace, name, expected revision), in one
        transaction, logging a DELETED event for each. An object that is gone or has moved on
        since it was read is skipped, not an error (the caller decided on a value it no longer
        has). Returns the deleted objects. One commit (one fsync) for the whole batch: the
        Event TTL sweep deletes thousands of rows with it."""
        def tx() -> list[tuple[int, str]]:
            out = []
            with self._write_ops() as ops:
                for namespace, name, expected in items:
                    ns = namespace or ""
                    key = object_key(resource, ns, name)
                    cur = ops.current(key)
                    if cur is None or cur[1] != expected:
                        continue
                    rev = ops.append(key, resource, ns, "DELETED", cur[0], cur[0], cur[1])
                    if ops.delete_object(key, expected) != 1:     # cannot happen under the write lock
                        raise RuntimeError(f"{key}: revision {expected} moved during its delete")
                    ops.delete_owners(key)
                    out.append((rev, cur[0]))
            return out

        done = self._retrying(tx) if items else []
        if done:
            self._notify(done[-1][0])
        return [_with_rv(value, rev) for rev, value in done]

    # ------------------------------------------------------------------ compaction
    COMPACT_CHUNK = 1000    # log rows deleted per transaction

    def compact(self, *, keep_seconds: float | None = None, revision: int | None = None) -> int:
        """Drop log rows at or below `revision` (or older than keep_seconds), never the newest row.
        Returns the new compacted revision.

        Deletes COMPACT_CHUNK rows per transaction and lets writers in between: the API server
        runs SQLite writes on its event loop, and one transaction deleting 20000 rows held the
        write lock for ≈ 0.6 s. The compacted revision advances with every chunk."""
        with self._read_conn() as conn, conn.begin():
            latest = int(conn.execute(select(func.max(events_t.c.id))).scalar() or 0)
            target = revision
            if target is None:
                cutoff = self.clock() - (keep_seconds or 0)
                target = int(conn.execute(select(func.max(events_t.c.id))
                                          .where(events_t.c.ts < cutoff)).scalar() or 0)
            oldest = int(conn.execute(select(func.min(events_t.c.id))).scalar() or 0)
        target = min(target, latest - 1)
        start = self._compacted
        done = start
        while done < target:
            step = min(target, max(done, oldest - 1) + self.COMPACT_CHUNK)
            done = self._retrying(lambda upto=step: self._compact_upto(upto))
            self._compacted = max(self._compacted, done)
        if self._compacted > start:
            if self.dialect == "sqlite":
                self._vacuum_if_mostly_free()
            log.info("compacted history up to revision %d", self._compacted)
        return self._compacted

    def _vacuum_if_mostly_free(self) -> None:
        """Give freed pages back to the file system when over half the file is free (after a
        burst); otherwise later writes reuse them, which costs nothing. In steps of 256 pages,
        each under the writers' lock: an incremental vacuum is a write, and outside the lock
        it would meet the event loop's writers in SQLite's busy handler instead of our queue."""
        last = None
        while True:
            with self._write_conn() as conn, conn.begin():
                free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0)
                pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar() or 0)
                if last is None and free * 2 < pages:
                    return
                if not free or free == last:    # done, or nothing more it can free
                    return
                conn.exec_driver_sql(f"PRAGMA incremental_vacuum({min(free, 256)})")
                last = free

    def _compact_upto(self, upto: int) -> int:
        with self._write_conn() as conn:
            with conn.begin():
                conn.execute(delete(events_t).where(events_t.c.id <= upto))
                existing = conn.execute(select(meta_t.c.value)
                                        .where(meta_t.c.name == "compacted_revision")).scalar()
                if existing is None:
                    conn.execute(insert(meta_t).values(name="compacted_revision", value=str(upto)))
                elif int(existing) < upto:
                    conn.execute(update(meta_t).where(meta_t.c.name == "compacted_revision")
                                 .values(value=str(upto)))
                else:
                    upto = int(existing)    # another server compacted further meanwhile
        return upto

    def refresh_compacted(self) -> int:
        """Re-read the compacted revision (another server may have compacted)."""
        self._compacted = max(self._compacted, self._read_meta_int("compacted_revision"))
        return self._compacted

    # ------------------------------------------------------------------ credentials
    def put_credential(self, token_hash: str, role: str, subject: str = "") -> None:
        def tx() -> None:
            with self._write_conn() as conn, conn.begin():
                conn.execute(delete(credentials_t).where(credentials_t.c.token_hash == token_hash))
                conn.execute(insert(credentials_t).values(token_hash=token_hash, role=role, subject=subject,
                                                          created=self.clock()))
        self._retrying(tx)

    def delete_credentials(self, role: str, subject: str | None = None) -> int:
        def tx() -> int:
            with self._write_conn() as conn, conn.begin():
                q = delete(credentials_t).where(credentials_t.c.role == role)
                if subject is not None:
                    q = q.where(credentials_t.c.subject == subject)
                return conn.execute(q).rowcount
        return self._retrying(tx)

    def claim_node_password(self, node: str, password_hash: str) -> bool:
        """Bind `node` to `password_hash` unless it is bound already. True when the name is
        (now) bound to this hash; False, with nothing written, when it is bound to another."""
        def tx() -> bool:
            with self._write_conn() as conn, conn.begin():
                row = conn.execute(select(node_passwords_t.c.password_hash)
                                   .where(node_passwords_t.c.node == node)).first()
                if row is None:
                    conn.execute(insert(node_passwords_t).values(node=node, password_hash=password_hash,
                                                                 created=self.clock()))
                    return True
                return hmac.compare_digest(row.password_hash, password_hash)
        for _ in range(3):
            try:
                return self._retrying(tx)
            except IntegrityError:      # another server bound the name meanwhile: compare with it
                continue
        return self._retrying(tx)

    def node_password_hash(self, node: str) -> str | None:
        with self._read_conn() as conn, conn.begin():
            return conn.execute(select(node_passwords_t.c.password_hash)
                                .where(node_passwords_t.c.node == node)).scalar()

    def put_node_password(self, node: str, password_hash: str | None) -> None:
        """Bind `node` to `password_hash` whatever it was bound to; None frees the name."""
        def tx() -> None:
            with self._write_conn() as conn, conn.begin():
                conn.execute(delete(node_passwords_t).where(node_passwords_t.c.node == node))
                if password_hash is not None:
                    conn.execute(insert(node_passwords_t).values(node=node, password_hash=password_hash,
                                                                 created=self.clock()))
        self._retrying(tx)

    def put_node_endpoint(self, node: str, endpoint: NodeEndpoint | None) -> None:
        """Record where `node`'s agent is (its verified registration), replacing what was
        recorded; None forgets it (the name was freed or re-issued without a certificate)."""
        def tx() -> None:
            with self._write_conn() as conn, conn.begin():
                conn.execute(delete(node_endpoints_t).where(node_endpoints_t.c.node == node))
                if endpoint is not None:
                    conn.execute(insert(node_endpoints_t).values(
                        node=node, address=endpoint.address, key_sha256=endpoint.key_sha256,
                        not_after=endpoint.not_after, created=self.clock()))
        self._retrying(tx)

    def node_endpoint(self, node: str) -> NodeEndpoint | None:
        with self._read_conn() as conn, conn.begin():
            row = conn.execute(select(node_endpoints_t.c.address, node_endpoints_t.c.key_sha256,
                                      node_endpoints_t.c.not_after)
                               .where(node_endpoints_t.c.node == node)).first()
        return NodeEndpoint(node, row.address, row.key_sha256, row.not_after) if row else None

    def replace_credentials(self, role: str, token_hash: str, subject: str = "") -> None:
        """Every credential of `role` (and `subject`) replaced by this one, in one transaction:
        a crash leaves either the old ones or the new one, never neither or both."""
        def tx() -> None:
            with self._write_conn() as conn, conn.begin():
                conn.execute(delete(credentials_t).where(credentials_t.c.role == role)
                             .where(credentials_t.c.subject == subject))
                conn.execute(delete(credentials_t).where(credentials_t.c.token_hash == token_hash))
                conn.execute(insert(credentials_t).values(token_hash=token_hash, role=role, subject=subject,
                                                          created=self.clock()))
        self._retrying(tx)

    def count_credentials(self, role: str) -> int:
        with self._read_conn() as conn, conn.begin():
            return len(conn.execute(select(credentials_t.c.token_hash).where(credentials_t.c.role == role)).all())

    def lookup_credential(self, token_hash: str) -> tuple[str, str] | None:
        with self._read_conn() as conn, conn.begin():
            row = conn.execute(select(credentials_t.c.role, credentials_t.c.subject)
                               .where(credentials_t.c.token_hash == token_hash)).first()
        return (row.role, row.subject) if row else None
