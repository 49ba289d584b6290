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
  seconds for the lock).
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

SQLite's WAL mode needs shared memory between processes: keep the file on a
local disk, not on a network file system (NFS, SMB).
"""

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache"]

_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS namespaces (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        info TEXT
    )""",
    # key: hash of (namespace, image content); vector: dim little-endian float32.
    """CREATE TABLE IF NOT EXISTS embeddings (
        key BLOB PRIMARY KEY,
        namespace_id INTEGER NOT NULL REFERENCES namespaces(id),
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL
    ) WITHOUT ROWID""",
    # Which content a path held when it was last embedded (size and mtime then).
    """CREATE TABLE IF NOT EXISTS paths (
        namespace_id INTEGER NOT NULL REFERENCES namespaces(id),
        path TEXT NOT NULL,
        key BLOB NOT NULL,
        size INTEGER,
        mtime_ns INTEGER,
        PRIMARY KEY (namespace_id, path)
    ) WITHOUT ROWID""",
)
# Well below SQLite's limit on bound parameters in one statement.
_CHUNK = 500
_VECTOR_DTYPE = np.dtype("<f4")


def _as_key(key):
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise TypeError(f"cache keys are bytes or str, got {type(key).__name__}.")


def _chunks(sequence, size=_CHUNK):
    for start in range(0, len(sequence), size):
        yield sequence[start : start + size]


class EmbeddingCache:
    """Embeddings on disk, keyed by image content, safe to share and to kill.

    The database is opened on first use and may be used from several threads
    (calls are serialised) and several processes (SQLite locking). Only the
    path is pickled, never the open connection.

    Parameters
    ----------
    path : str or path-like
        The SQLite file; it and its folder are created if missing. SQLite
        keeps two companion files beside it while it is open (``-wal`` and
        ``-shm``).
    timeout : float, default=60.0
        Seconds to wait for another process's write to finish before failing.

    Attributes
    ----------
    path : pathlib.Path

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
        self.timeout = timeout
        self._connection = None
        self._lock = threading.RLock()

    def __repr__(self):
        return f"EmbeddingCache({str(self.path)!r})"

    # Connection ------------------------------------------------------------

    def _connect(self):
        """The open connection, opening the database (and schema) on first use."""
        if self._connection is not None:
            return self._connection
        if self.path.is_dir():
            raise IsADirectoryError(
                f"The embedding cache path {str(self.path)!r} is a directory; "
                "give a file name such as 'embeddings.sqlite'."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: transactions are opened explicitly, below.
            connection = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise OSError(
                f"Cannot open the embedding cache {str(self.path)!r}: {exc}"
            ) from exc
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._create_schema(connection)
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise ValueError(
                f"{str(self.path)!r} is not a usable embedding cache: {exc}. "
                "Give the path of a new file or of a cache written by skclipxray."
            ) from exc
        self._connection = connection
        return connection

    def _create_schema(self, connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == _SCHEMA_VERSION:
            return
        if version > _SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"it was written by a newer skclipxray (cache format {version}, "
                f"this version reads format {_SCHEMA_VERSION})"
            )
        connection.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                row[0] for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            if tables - {"namespaces", "embeddings", "paths"}:
                raise sqlite3.DatabaseError(
                    f"it is an SQLite database holding other tables ({sorted(tables)})"
                )
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @contextmanager
    def _reading(self):
        with self._lock:
            yield self._connect()

    @contextmanager
    def _writing(self):
        """One write transaction: all of it is stored, or none of it."""
        with self._lock:
            connection = self._connect()
            # IMMEDIATE takes the write lock now (waiting up to `timeout`),
            # rather than failing when a read turns into a write.
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def close(self):
        """Close the database; it is reopened if the cache is used again."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

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
        with self._reading() as connection:
            return connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def __contains__(self, key):
        with self._reading() as connection:
            return connection.execute(
                "SELECT 1 FROM embeddings WHERE key = ?", (_as_key(key),)
            ).fetchone() is not None

    def get_many(self, keys):
        """Look up embeddings.

        Parameters
        ----------
        keys : sequence of bytes or str

        Returns
        -------
        dict
            ``{key: embedding}`` for the keys found (float32, 1-D); missing
            keys are absent.
        """
        keys = [_as_key(key) for key in keys]
        found = {}
        with self._reading() as connection:
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                for key, blob in connection.execute(
                    f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", chunk
                ):
                    found[key] = np.frombuffer(blob, dtype=_VECTOR_DTYPE).astype(np.float32)
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
        with self._writing() as connection:
            namespace_id = self._namespace_id(connection, namespace, namespace_info)
            connection.executemany(
                "INSERT OR REPLACE INTO embeddings (key, namespace_id, dim, vector) "
                "VALUES (?, ?, ?, ?)",
                [(key, namespace_id, dim, row.tobytes()) for key, row in zip(keys, vectors)],
            )
            if paths is not None:
                self._link(connection, namespace_id, keys, paths, stamps)

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

    def _link(self, connection, namespace_id, keys, paths, stamps):
        self._insert_paths(connection, namespace_id, _path_rows(keys, paths, stamps))

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
            pooled outputs (not L2-normalised).
        """
        import pandas as pd

        with self._reading() as connection:
            name = self._resolve_namespace(connection, namespace)
            rows = [] if name is None else connection.execute(
                """SELECT p.path, p.size, p.mtime_ns, e.dim, e.vector
                   FROM paths p
                   JOIN namespaces n ON n.id = p.namespace_id
                   JOIN embeddings e ON e.key = p.key
                   WHERE n.name = ? ORDER BY p.path""",
                (name,),
            ).fetchall()
        if check_files:
            rows = [row for row in rows if _stamp_of(row[0]) == (row[1], row[2])]
        dims = {row[3] for row in rows}
        if len(dims) > 1:
            raise ValueError(
                f"Namespace {name!r} mixes embedding sizes {sorted(dims)}; "
                "it was not written by one checkpoint."
            )
        dim = dims.pop() if dims else 0
        values = np.frombuffer(b"".join(row[4] for row in rows), dtype=_VECTOR_DTYPE)
        values = values.astype(np.float32).reshape(len(rows), dim)
        index = pd.Index([row[0] for row in rows], name="path", dtype=object)
        return pd.DataFrame(values, index=index, columns=[f"{prefix}{i}" for i in range(dim)])


def _stamp_of(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _path_rows(keys, paths, stamps):
    """(absolute path, key, size, mtime_ns) for every row that has a path."""
    if len(paths) != len(keys) or (stamps is not None and len(stamps) != len(keys)):
        raise ValueError("keys, paths and stamps must have the same length.")
    rows = []
    for i, (key, path) in enumerate(zip(keys, paths)):
        if path is None:
            continue
        size, mtime_ns = (None, None) if stamps is None or stamps[i] is None else stamps[i]
        rows.append((os.path.abspath(os.fspath(path)), key, size, mtime_ns))
    return rows
