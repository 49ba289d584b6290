"""The SQLite file behind :class:`~skclipxray.cache.EmbeddingCache`.

Its tables and their columns in each format, the check that a file is a
cache of a known format, the upgrade from format 1, the check of a stored
vector, the rows of the paths table, whether the file may be written,
transactions, and SQLite's result codes with what each failure means for
the cache.
"""

import os
import sqlite3
import zlib
from contextlib import contextmanager, suppress

import numpy as np

# Format 1: no checksum. Format 2: embeddings.crc, the CRC32 of the vector blob.
_SCHEMA_VERSION = 2
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS namespaces (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        info TEXT
    )""",
    # key: hash of (namespace, image content); vector: dim little-endian
    # float32; crc: zlib.crc32 of vector.
    """CREATE TABLE IF NOT EXISTS embeddings (
        key BLOB PRIMARY KEY,
        namespace_id INTEGER NOT NULL REFERENCES namespaces(id),
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        crc INTEGER
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
# The columns of each table, by format.
_COLUMNS = {
    1: {
        "namespaces": ["id", "name", "info"],
        "embeddings": ["key", "namespace_id", "dim", "vector"],
        "paths": ["namespace_id", "path", "key", "size", "mtime_ns"],
    },
}
_COLUMNS[2] = {**_COLUMNS[1], "embeddings": [*_COLUMNS[1]["embeddings"], "crc"]}
_VECTOR_DTYPE = np.dtype("<f4")

# Well below SQLite's limit on bound parameters in one statement.
_CHUNK = 500

# SQLite's primary result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14
# Their messages, for Python < 3.11 whose exceptions do not carry the code.
_MESSAGES = {
    "database is locked": _SQLITE_BUSY,
    "database table is locked": _SQLITE_LOCKED,
    "attempt to write a readonly database": _SQLITE_READONLY,
    "disk I/O error": _SQLITE_IOERR,
    "database or disk is full": _SQLITE_FULL,
    "unable to open database file": _SQLITE_CANTOPEN,
}


def _as_key(key):
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise TypeError(f"cache keys are bytes or str, got {type(key).__name__}.")


def _chunks(sequence, size=_CHUNK):
    for start in range(0, len(sequence), size):
        yield sequence[start : start + size]


def _writable(path):
    """Whether this process may write ``path`` (False on a read-only mount, even as root)."""
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def _on_read_only_file_system(path):
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs on Windows
        return False


def _read_only_reason(path):
    """Why the existing cache file ``path`` is opened read-only; None if it may be written."""
    if _on_read_only_file_system(path):
        return "it is on a read-only file system"
    if not _writable(path):
        return "the file cannot be written"
    if not _writable(path.parent):
        return ("its folder cannot be written, so SQLite cannot create "
                "its -wal and -shm files")
    return None


def _result_code(exc):
    """SQLite's primary result code of ``exc``, or None if unknown."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    return _MESSAGES.get(str(exc))


@contextmanager
def _transaction(connection, begin="BEGIN"):
    """Committed if the block succeeds, else rolled back."""
    connection.execute(begin)
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with suppress(sqlite3.Error):  # report the first failure
                connection.execute("ROLLBACK")
        raise


def _vector_of(dim, blob, crc, *, check_crc):
    """The stored vector as float32, or None if the row is damaged."""
    if (
        not isinstance(blob, bytes) or not isinstance(dim, int) or dim <= 0
        or len(blob) != dim * _VECTOR_DTYPE.itemsize
        or (check_crc and crc != zlib.crc32(blob))
    ):
        return None
    vector = np.frombuffer(blob, dtype=_VECTOR_DTYPE).astype(np.float32)
    return vector if np.isfinite(vector).all() else None


def _vector_ok(dim, blob):
    """SQL function for the upgrade from format 1: length and finiteness."""
    return _vector_of(dim, blob, None, check_crc=False) is not None


def _check_format(connection, unusable):
    """The format number, once the tables are checked to be of that format.

    ``unusable(detail, advice=None)`` makes the error raised for a file that
    is not a cache of a known format.
    """
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = {
        row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    if version > _SCHEMA_VERSION:
        raise unusable(
            f"it was written by a newer skclipxray (cache format {version}, "
            f"this version reads format {_SCHEMA_VERSION} and older)",
            "Upgrade skclipxray, or give the path of another cache.",
        )
    if version == 0:
        if tables:  # a cache's tables are created with its format number
            raise unusable(
                "it is an SQLite database holding other tables "
                f"({sorted(tables)}), not an embedding cache",
                "Give the path of a new file or of a cache written by skclipxray.",
            )
        return version
    for table, expected in _COLUMNS[version].items():
        if table not in tables:
            raise unusable(
                f"it has no table {table!r}, which a cache of format {version} has"
            )
        columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        if columns != expected:
            raise unusable(
                f"its table {table!r} has the columns {columns}, not those of "
                f"a cache of format {version} ({expected})"
            )
    return version


def _upgrade_from_1(connection):
    """Add the checksum; delete the rows that could never be served."""
    connection.create_function(
        "skclipxray_vector_ok", 2, _vector_ok, deterministic=True
    )
    connection.create_function("skclipxray_crc32", 1, zlib.crc32, deterministic=True)
    connection.execute(
        "DELETE FROM embeddings WHERE NOT skclipxray_vector_ok(dim, vector)"
    )
    connection.execute("ALTER TABLE embeddings ADD COLUMN crc INTEGER")
    connection.execute("UPDATE embeddings SET crc = skclipxray_crc32(vector)")


def _prepare_schema(connection, *, writable, unusable, empty_read_only):
    """Check the format; create the tables, or upgrade them, if writable.

    Returns whether the rows have checksums (format 2). ``unusable`` is as
    for :func:`_check_format`; ``empty_read_only()`` makes the error raised
    for an empty file that cannot be written.
    """
    # In one transaction, so that the format number and the tables read
    # are of one state of the file, however other processes change it.
    with _transaction(connection):
        version = _check_format(connection, unusable)
    if version == _SCHEMA_VERSION or (version == 1 and not writable):
        return version >= 2
    if not writable:  # an empty file
        raise empty_read_only()
    # Another process may be creating or upgrading it too: under the write
    # lock, the format is read again.
    with _transaction(connection, "BEGIN IMMEDIATE"):
        version = _check_format(connection, unusable)
        if version == 0:
            for statement in _SCHEMA:
                connection.execute(statement)
        elif version == 1:
            _upgrade_from_1(connection)
        connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    return True


def _error_message(code, exc, path, timeout):
    """What to say of an sqlite3.Error of result ``code`` on the cache ``path``.

    None for the codes the cache explains itself (read-only) or cannot name.
    """
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return (
            f"The embedding cache {path!r} is locked: another process holds "
            f"its write lock and did not release it within timeout="
            f"{timeout:g} seconds. Wait for that process to finish, or "
            "give a longer timeout, in seconds (EmbeddingCache(timeout=...), "
            "SigLIPImageEmbedder(cache_timeout=...))."
        )
    if code == _SQLITE_FULL:
        return (
            f"The embedding cache {path!r} could not be written: {exc}. "
            "Free space on its disk, or give a path on another disk."
        )
    if code == _SQLITE_IOERR:
        return (
            f"The embedding cache {path!r} could not be read or written: {exc}. "
            "Check the disk it is on."
        )
    if code == _SQLITE_CANTOPEN:
        return (
            f"Cannot open the embedding cache {path!r}: {exc}. Check that the "
            "file and its folder exist and can be read."
        )
    return None


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
