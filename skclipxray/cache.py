"""A persistent store of image embeddings in one SQLite file.

Embedding an image costs one forward pass of a vision transformer; every
classifier head trains in seconds. :class:`EmbeddingCache` keeps each
embedding on disk so that it is computed once, ever: by every clone that
``GridSearchCV`` or ``cross_validate`` makes, by the next run of a script,
and by several processes at once.

Design
------
* One SQLite database in write-ahead-log (WAL) mode. Readers never block the
  writer nor each other; writers take turns (each waits up to ``timeout``
  seconds for the lock, then fails with an :class:`EmbeddingCacheError` that
  says so).
* Each :meth:`~EmbeddingCache.put_many` is one transaction: a process killed
  at any point (even ``SIGKILL``) loses at most the batch it was writing, and
  the file is never left half-written. ``synchronous=NORMAL`` makes a commit
  durable against the process dying, which is what a long embedding run needs;
  after a power cut or operating-system crash the last few commits may be
  rolled back (never corrupted), and those images are simply embedded again.
  ``FULL`` would add an ``fsync`` per batch for no benefit to a store whose
  every row can be recomputed.
* Rows are keyed by an opaque ``key`` (bytes) that the caller derives from the
  image *content* and everything that changes the embedding (checkpoint,
  precision, preprocessing): :class:`~skclipxray.SigLIPImageEmbedder` hashes
  the file bytes, or the pixels of in-memory images. A second table records
  which file path held which content, so that embeddings can be read back as a
  table indexed by path (:meth:`~EmbeddingCache.to_frame`).
* Embeddings are grouped in *namespaces*, one per checkpoint and precision
  (the embedder names them by a hash and records what they stand for; see
  :meth:`~EmbeddingCache.namespaces`).
* Every row stores the CRC32 of its vector, and every read checks it, with the
  vector's length and finiteness. A row that fails is never served: it is
  reported as missing (so the caller computes it again, and
  :meth:`~EmbeddingCache.put_many` replaces it) and counted in
  :attr:`~EmbeddingCache.n_rejected`. Caches written before the checksum
  (format 1) are upgraded in place when first opened for writing: rows of the
  wrong length or with non-finite values are deleted, the others get their
  checksum then (a value damaged before that cannot be detected).
* A cache whose file or folder cannot be written (a read-only mount, another
  user's file) is opened read-only: its embeddings are served, and any write
  raises :class:`ReadOnlyCacheError`. When SQLite cannot create its ``-shm``
  file beside the database either, the file is read as *immutable*: no other
  process may write it meanwhile, and embeddings left in a ``-wal`` file by a
  writer that did not close it are not seen.
* Every SQLite failure (a damaged file, a file that is not a cache, a lock
  held past ``timeout``, a full disk) is raised as an
  :class:`EmbeddingCacheError` naming the file and saying what to do.

SQLite's WAL mode needs shared memory between processes: keep the file on a
local disk, not on a network file system (NFS, SMB). A read-only share is
fine.
"""

import json
import numbers
import os
import sqlite3
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ._cache_format import (
    _SQLITE_BUSY,
    _SQLITE_CANTOPEN,
    _SQLITE_LOCKED,
    _SQLITE_READONLY,
    _VECTOR_DTYPE,
    _as_key,
    _chunks,
    _error_message,
    _path_rows,
    _prepare_schema,
    _read_only_reason,
    _result_code,
    _stamp_of,
    _transaction,
    _vector_of,
    _writable,
)

__all__ = ["EmbeddingCache", "EmbeddingCacheError", "ReadOnlyCacheError"]

#: Seconds between tries of a busy open: doubling from the first to the last.
_FIRST_RETRY_DELAY = 0.01
_LAST_RETRY_DELAY = 0.5


class EmbeddingCacheError(OSError):
    """The embedding cache file cannot be used as asked.

    Raised for every failure of the SQLite file behind an
    :class:`EmbeddingCache`: a damaged file or one that is not a cache, a
    write lock that another process held longer than ``timeout``, a full disk,
    a path that cannot be created. The message names the file and says what
    to do. A subclass of :class:`OSError`: the fault is in a file or its
    storage, not in the values passed.
    """


class ReadOnlyCacheError(EmbeddingCacheError):
    """A write to an embedding cache that was opened read-only.

    The cache still serves the embeddings it holds; only storing new ones
    (:meth:`EmbeddingCache.put_many`, :meth:`EmbeddingCache.link_paths`)
    fails.
    """


class EmbeddingCache:
    """Embeddings on disk, keyed by image content, safe to share and to kill.

    The database is opened on first use and may be used from several threads
    (calls are serialised) and several processes (SQLite locking). Only the
    path and the timeout are pickled, never the open connection.

    Parameters
    ----------
    path : str or path-like
        The SQLite file; it and its folder are created if missing. SQLite
        keeps two companion files beside it while it is open (``-wal`` and
        ``-shm``). If the file or its folder cannot be written, the cache is
        opened read-only (see :attr:`read_only`).
    timeout : float, default=60.0
        Seconds to wait for another process's write to finish before failing
        with an :class:`EmbeddingCacheError`.

    Attributes
    ----------
    path : pathlib.Path
    timeout : float
    n_rejected : int
        How many stored rows the lookups of this object found damaged (a blob
        of the wrong length, non-finite values, or a checksum that does not
        match) and reported as missing instead of serving them. Cumulative: a
        row looked up twice counts twice. It starts at 0 (it is not pickled).

    Raises
    ------
    EmbeddingCacheError
        From any method, when the file cannot be used: see its documentation.
    ReadOnlyCacheError
        From the methods that write, when the cache is read-only.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from skclipxray.cache import EmbeddingCache
    >>> folder = tempfile.mkdtemp()
    >>> with EmbeddingCache(f"{folder}/embeddings.sqlite") as cache:
    ...     cache.put_many([b"a", b"b"], np.eye(2, 3), namespace="demo",
    ...                    paths=["img/a.png", "img/b.png"])
    ...     found = cache.get_many([b"a", b"c"])
    ...     frame = cache.to_frame()
    >>> sorted(found), found[b"a"]
    ([b'a'], array([1., 0., 0.], dtype=float32))
    >>> frame.shape, frame.columns[0]
    ((2, 3), 'siglip0')
    """

    def __init__(self, path, *, timeout=60.0):
        self.path = Path(os.fspath(path)).expanduser()
        if (
            isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
            or not 0 <= timeout < float("inf")
        ):
            raise ValueError(
                f"timeout must be a number of seconds >= 0, got {timeout!r}."
            )
        self.timeout = float(timeout)
        self.n_rejected = 0
        self._connection = None
        self._read_only = None  # why the open cache is read-only; None: it is writable
        self._has_crc = True  # False for a format-1 cache opened read-only
        self._lock = threading.RLock()

    def __repr__(self):
        return f"EmbeddingCache({str(self.path)!r})"

    @property
    def read_only(self):
        """Whether the cache was opened read-only, opening it if needed.

        True when the file or its folder cannot be written (or SQLite refused
        to write it): the embeddings it holds are served, and
        :meth:`put_many` and :meth:`link_paths` raise
        :class:`ReadOnlyCacheError`.
        """
        with self._lock:
            self._connect()
            return self._read_only is not None

    # Connection ------------------------------------------------------------

    def _connect(self):
        """The open connection, opening the database (and schema) on first use."""
        if self._connection is not None:
            return self._connection
        try:
            self._connection = self._open()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        except EmbeddingCacheError:
            raise
        except OSError as exc:
            raise EmbeddingCacheError(
                f"Cannot open the embedding cache {str(self.path)!r}: {exc}."
            ) from exc
        return self._connection

    def _open(self):
        path = self.path
        if path.is_dir():
            raise EmbeddingCacheError(
                f"The embedding cache path {str(path)!r} is a directory; "
                "give a file name such as 'embeddings.sqlite'."
            )
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EmbeddingCacheError(
                    f"Cannot create the embedding cache {str(path)!r}: {exc}. "
                    "Give a path in a folder you can write to."
                ) from exc
            if not _writable(path.parent):
                raise EmbeddingCacheError(
                    f"Cannot create the embedding cache {str(path)!r}: its folder "
                    "cannot be written. Give a path in a folder you can write to."
                )
            return self._open_for_writing()
        reason = _read_only_reason(path)
        if reason is None:
            try:
                return self._open_for_writing()
            except sqlite3.Error as exc:
                if _result_code(exc) not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
                    raise
                reason = f"SQLite cannot write it: {exc}"
        return self._open_read_only(reason)

    def _new_connection(self, target, **kwargs):
        # isolation_level=None: transactions are opened explicitly (_writing).
        # timeout is SQLite's busy timeout: how long a statement waits for a lock.
        return sqlite3.connect(
            target, timeout=self.timeout, isolation_level=None,
            check_same_thread=False, **kwargs,
        )

    def _open_for_writing(self):
        # Opening meets the other connections' opening and closing: the WAL
        # switch and its recovery can answer "busy" at once, without SQLite's
        # busy timeout, so a busy open is tried again until `timeout` is spent.
        deadline = time.monotonic() + self.timeout
        delay = _FIRST_RETRY_DELAY
        while True:
            connection = self._new_connection(self.path)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                self._prepare_schema(connection, writable=True)
            except sqlite3.OperationalError as exc:
                connection.close()
                if (_result_code(exc) not in (_SQLITE_BUSY, _SQLITE_LOCKED)
                        or time.monotonic() + delay > deadline):
                    raise
                time.sleep(delay)
                delay = min(2 * delay, _LAST_RETRY_DELAY)
                continue
            except BaseException:
                connection.close()
                raise
            self._read_only = None
            return connection

    def _open_read_only(self, reason):
        uri = self.path.absolute().as_uri()
        # mode=ro shares the -shm index with writers; without one, and no right
        # to create it, the file can only be read as immutable.
        for query in ("mode=ro", "mode=ro&immutable=1"):
            connection = self._new_connection(f"{uri}?{query}", uri=True)
            try:
                connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                break
            except sqlite3.Error as exc:
                connection.close()
                if "immutable" in query or _result_code(exc) not in (
                    _SQLITE_READONLY, _SQLITE_CANTOPEN
                ):
                    raise
        try:
            self._read_only = reason
            self._prepare_schema(connection, writable=False)
        except BaseException:
            connection.close()
            raise
        return connection

    def _prepare_schema(self, connection, *, writable):
        """Check the format; create the tables, or upgrade them, if writable."""
        self._has_crc = _prepare_schema(
            connection, writable=writable, unusable=self._unusable,
            empty_read_only=lambda: ReadOnlyCacheError(self._read_only_message(" and empty")),
        )

    # Errors ------------------------------------------------------------------

    def _unusable(self, detail, advice=None):
        if advice is None:
            advice = (
                "If it is a damaged cache, delete it (with its -wal and -shm "
                "files, if any): its embeddings are computed again. Otherwise give "
                "the path of a new file or of a cache written by skclipxray."
            )
        return EmbeddingCacheError(
            f"{str(self.path)!r} is not a usable embedding cache: {detail}. {advice}"
        )

    def _read_only_message(self, what=""):
        return (
            f"The embedding cache {str(self.path)!r} is read-only{what} "
            f"({self._read_only}): the embeddings it holds can be read, but new "
            "ones cannot be stored. Give a cache path you can write to (copy this "
            "file there to keep its embeddings)."
        )

    def _error(self, exc):
        """The EmbeddingCacheError that explains an sqlite3.Error."""
        code = _result_code(exc)
        if code == _SQLITE_READONLY:
            if self._read_only is None:
                self._read_only = f"SQLite cannot write it: {exc}"
            return ReadOnlyCacheError(self._read_only_message())
        message = _error_message(code, exc, str(self.path), self.timeout)
        return self._unusable(str(exc)) if message is None else EmbeddingCacheError(message)

    @contextmanager
    def _sqlite_errors(self):
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @contextmanager
    def _reading(self):
        with self._lock, self._sqlite_errors():
            yield self._connect()

    @contextmanager
    def _writing(self):
        """One write transaction: all of it is stored, or none of it."""
        with self._lock, self._sqlite_errors():
            connection = self._connect()
            if self._read_only is not None:
                raise ReadOnlyCacheError(self._read_only_message())
            # IMMEDIATE takes the write lock now (waiting up to `timeout`),
            # rather than failing when a read turns into a write.
            with _transaction(connection, "BEGIN IMMEDIATE"):
                yield connection

    def close(self):
        """Close the database; it is reopened if the cache is used again."""
        with self._lock, self._sqlite_errors():
            if self._connection is not None:
                connection, self._connection = self._connection, None
                connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __getstate__(self):
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state):
        self.__init__(state["path"], timeout=state["timeout"])

    # Namespaces ----------------------------------------------------------------

    def _namespace_id(self, connection, namespace, info=None, *, create=True):
        row = connection.execute(
            "SELECT id FROM namespaces WHERE name = ?", (namespace,)
        ).fetchone()
        if row is not None:
            return row[0]
        if not create:
            return None
        info = None if info is None else json.dumps(info, sort_keys=True)
        return connection.execute(
            "INSERT INTO namespaces (name, info) VALUES (?, ?)", (namespace, info)
        ).lastrowid

    def namespaces(self):
        """What the cache holds: one row per namespace.

        Returns
        -------
        pandas.DataFrame
            Indexed by namespace name, with the number of embeddings and of
            recorded paths, and one column per field of the information
            recorded with the namespace (for the image embedder: the model,
            its checkpoint's identity, the precision and the preprocessing).
        """
        import pandas as pd

        with self._reading() as connection:
            rows = connection.execute(
                """SELECT n.name, n.info,
                          (SELECT COUNT(*) FROM embeddings e WHERE e.namespace_id = n.id),
                          (SELECT COUNT(*) FROM paths p WHERE p.namespace_id = n.id)
                   FROM namespaces n ORDER BY n.id"""
            ).fetchall()
        records = [
            {"namespace": name, "n_embeddings": n_embeddings, "n_paths": n_paths,
             **(json.loads(info) if info else {})}
            for name, info, n_embeddings, n_paths in rows
        ]
        frame = pd.DataFrame.from_records(
            records, columns=None if records else ["namespace", "n_embeddings", "n_paths"]
        )
        return frame.set_index("namespace")

    # Embeddings ----------------------------------------------------------------

    def __len__(self):
        """The number of stored rows, damaged ones included."""
        with self._reading() as connection:
            return connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def __contains__(self, key):
        """Whether :meth:`get_many` would return an embedding for ``key``."""
        key = _as_key(key)
        return key in self.get_many([key])

    def _verified(self, dim, blob, crc):
        """The stored vector, or None (and one more rejection) if it is damaged."""
        vector = _vector_of(dim, blob, crc, check_crc=self._has_crc)
        if vector is None:
            self.n_rejected += 1
        return vector

    def get_many(self, keys):
        """Look up embeddings.

        Every row is checked before it is returned: its length, its values
        (all finite) and its checksum. A damaged row is left out as if it were
        missing, so that the caller computes the embedding again (and
        :meth:`put_many` replaces the row); it is counted in
        :attr:`n_rejected`.

        Parameters
        ----------
        keys : sequence of bytes or str

        Returns
        -------
        dict
            ``{key: embedding}`` for the keys found (float32, 1-D); missing
            keys, and keys whose row is damaged, are absent.
        """
        keys = [_as_key(key) for key in keys]
        found = {}
        with self._reading() as connection:
            crc = "crc" if self._has_crc else "NULL"
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                for key, dim, blob, stored_crc in connection.execute(
                    f"SELECT key, dim, vector, {crc} FROM embeddings "
                    f"WHERE key IN ({marks})",
                    chunk,
                ):
                    vector = self._verified(dim, blob, stored_crc)
                    if vector is not None:
                        found[key] = vector
        return found

    def put_many(self, keys, vectors, *, namespace="default", namespace_info=None,
                 paths=None, stamps=None):
        """Store embeddings, in one transaction.

        Parameters
        ----------
        keys : sequence of bytes or str
            One key per row of ``vectors``; an existing key is overwritten.
        vectors : array-like of shape (n_keys, dim)
            Finite values; stored as float32.
        namespace : str, default="default"
            Group the embeddings belong to (created if new).
        namespace_info : dict, optional
            JSON-serialisable description, recorded when the namespace is new.
        paths : sequence of (str, path-like or None), optional
            The file each row was read from, recorded for :meth:`to_frame`;
            ``None`` for images that were not files.
        stamps : sequence of ((size, mtime_ns) or None), optional
            The file's size and modification time when it was read.

        Raises
        ------
        ValueError
            If the shapes do not match or a value is not finite.
        ReadOnlyCacheError
            If the cache is read-only (see :attr:`read_only`).
        """
        keys = [_as_key(key) for key in keys]
        vectors = np.asarray(vectors, dtype=_VECTOR_DTYPE)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(
                f"vectors must have shape ({len(keys)}, dim) for {len(keys)} keys, "
                f"got {vectors.shape}."
            )
        if not np.isfinite(vectors).all():
            bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise ValueError(f"vectors[{bad}] has non-finite values; it is not stored.")
        dim = vectors.shape[1]
        # Checked before the write lock is taken, which would block other writers.
        path_rows = None if paths is None else _path_rows(keys, paths, stamps)
        blobs = [row.tobytes() for row in vectors]
        with self._writing() as connection:
            namespace_id = self._namespace_id(connection, namespace, namespace_info)
            connection.executemany(
                "INSERT OR REPLACE INTO embeddings (key, namespace_id, dim, vector, crc) "
                "VALUES (?, ?, ?, ?, ?)",
                [(key, namespace_id, dim, blob, zlib.crc32(blob))
                 for key, blob in zip(keys, blobs)],
            )
            if path_rows is not None:
                self._insert_paths(connection, namespace_id, path_rows)

    def link_paths(self, keys, paths, *, namespace="default", stamps=None):
        """Record that ``paths[i]`` held the content of ``keys[i]``.

        Rows that are already recorded as given are not rewritten, so that a
        run served entirely from the cache does not write to it.

        Parameters
        ----------
        keys : sequence of bytes or str
        paths : sequence of (str, path-like or None)
        namespace : str, default="default"
        stamps : sequence of ((size, mtime_ns) or None), optional

        Raises
        ------
        ReadOnlyCacheError
            If the cache is read-only and a row is not already recorded as given.
        """
        keys = [_as_key(key) for key in keys]
        rows = _path_rows(keys, paths, stamps)
        if not rows:
            return
        with self._reading() as connection:
            namespace_id = self._namespace_id(connection, namespace, create=False)
            if namespace_id is not None:
                known = set()
                for chunk in _chunks([row[0] for row in rows]):
                    marks = ",".join("?" * len(chunk))
                    known.update(connection.execute(
                        f"SELECT path, key, size, mtime_ns FROM paths "
                        f"WHERE namespace_id = ? AND path IN ({marks})",
                        [namespace_id, *chunk],
                    ))
                rows = [row for row in rows if row not in known]
        if rows:
            with self._writing() as connection:
                namespace_id = self._namespace_id(connection, namespace)
                self._insert_paths(connection, namespace_id, rows)

    @staticmethod
    def _insert_paths(connection, namespace_id, rows):
        connection.executemany(
            "INSERT OR REPLACE INTO paths (namespace_id, path, key, size, mtime_ns) "
            "VALUES (?, ?, ?, ?, ?)",
            [(namespace_id, *row) for row in rows],
        )

    # Reading back --------------------------------------------------------------

    def _resolve_namespace(self, connection, namespace):
        names = [row[0] for row in connection.execute("SELECT name FROM namespaces")]
        if namespace is None:
            if len(names) > 1:
                raise ValueError(
                    f"The cache {str(self.path)!r} holds {len(names)} namespaces "
                    f"({', '.join(names)}); choose one with namespace=... "
                    "(see EmbeddingCache.namespaces())."
                )
            return names[0] if names else None
        if namespace not in names:
            raise KeyError(
                f"The cache {str(self.path)!r} has no namespace {namespace!r}; "
                f"it has {names}."
            )
        return namespace

    def to_frame(self, namespace=None, *, check_files=False, prefix="siglip"):
        """The embeddings of every recorded file, as a table indexed by path.

        Parameters
        ----------
        namespace : str, optional
            Which namespace to read; may be left out when the cache holds one.
            A fitted :class:`~skclipxray.SigLIPImageEmbedder` names its own in
            ``cache_namespace_``.
        check_files : bool, default=False
            Leave out paths whose file is gone, or whose size or modification
            time changed since it was embedded (its recorded embedding may no
            longer describe it).
        prefix : str, default="siglip"
            Column names are ``prefix0``, ``prefix1``, ..., as the embedder's
            ``get_feature_names_out``.

        Returns
        -------
        pandas.DataFrame
            One row per absolute file path (index ``"path"``, sorted), one
            float32 column per embedding dimension. Embeddings are the raw
            pooled outputs (not L2-normalised). Paths whose stored row is
            damaged are left out, and counted in :attr:`n_rejected`, as in
            :meth:`get_many`.
        """
        import pandas as pd

        with self._reading() as connection:
            name = self._resolve_namespace(connection, namespace)
            crc = "e.crc" if self._has_crc else "NULL"
            rows = [] if name is None else connection.execute(
                f"""SELECT p.path, p.size, p.mtime_ns, e.dim, e.vector, {crc}
                    FROM paths p
                    JOIN namespaces n ON n.id = p.namespace_id
                    JOIN embeddings e ON e.key = p.key
                    WHERE n.name = ? ORDER BY p.path""",
                (name,),
            ).fetchall()
            if check_files:
                rows = [row for row in rows if _stamp_of(row[0]) == (row[1], row[2])]
            kept = [(row[0], self._verified(*row[3:])) for row in rows]
        kept = [(path, vector) for path, vector in kept if vector is not None]
        dims = {len(vector) for _, vector in kept}
        if len(dims) > 1:
            raise ValueError(
                f"Namespace {name!r} mixes embedding sizes {sorted(dims)}; "
                "it was not written by one checkpoint."
            )
        dim = dims.pop() if dims else 0
        values = (np.stack([vector for _, vector in kept]) if kept
                  else np.empty((0, dim), dtype=np.float32))
        index = pd.Index([path for path, _ in kept], name="path", dtype=object)
        return pd.DataFrame(values, index=index, columns=[f"{prefix}{i}" for i in range(dim)])
