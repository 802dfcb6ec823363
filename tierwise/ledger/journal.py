"""Each writer's append-only journal: what makes a recorded row survive a hard kill.

Each :class:`~tierwise.ledger.store.Ledger` (writer) appends every row, in the same
``record()`` call, as one line to its own journal ``<ledger>.journal/<writer id>.jsonl``
with a single ``write()``; the data is then in the OS page cache, which outlives the
process. The writer holds an exclusive ``flock`` on its journal for its life, empties it
whenever every row is committed, and deletes it on close. Opening a ledger imports the
journals whose lock is free (their writer died): the rows after that writer's committed
sequence number, in one transaction that advances it — so importing twice adds nothing
(:func:`tierwise.ledger.schema.commit`). A line cut short by the kill is ignored (that
``record()`` had not returned). Without ``fcntl`` (Windows) there is no journal.

A line is the row's sequence number, a tab, the JSON array of its fields
(:func:`tierwise.ledger.rows.journal_body`) and a newline.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: no journal (see the module doc)
    _fcntl = None  # type: ignore[assignment]

from tierwise.ledger.rows import COLUMNS, V1_FIELDS, LedgerRow, from_values, journal_body

__all__ = ["AVAILABLE", "Journal", "read_journal", "recover_journals"]

logger = logging.getLogger(__name__)

AVAILABLE: Final = _fcntl is not None
"""Whether journals can be kept here (they need ``flock``)."""
# A journal longer than this, with rows still pending after a commit, is rewritten to
# hold only those rows (otherwise it is emptied whenever every row is committed).
_JOURNAL_LIMIT: Final = 1 << 20
_SUFFIX: Final = ".jsonl"

#: Commits rows recovered from dead writer ``writer``; returns how many were new.
CommitRecovered = Callable[[list[tuple[int, LedgerRow]], str], int]


def journal_dir(ledger_path: Path) -> Path:
    """The folder holding the journals of the ledger file ``ledger_path``."""
    return Path(f"{ledger_path}.journal")


class Journal:
    """One writer's journal file, opened (and locked) by the first :meth:`append`.

    The caller serialises :meth:`append`, :meth:`trim` and :meth:`detach` (the ledger
    calls them under its row lock, so lines stay in sequence order and a commit cannot
    empty the journal before the line of a row it holds is written).
    """

    __slots__ = ("_fd", "_size", "directory", "enabled", "label", "writer")

    def __init__(self, ledger_path: Path, writer: str) -> None:
        """The journal of ``writer`` beside ``ledger_path`` (no file until the first line)."""
        self.directory = journal_dir(ledger_path)
        self.writer = writer
        self.label = ledger_path
        self.enabled = AVAILABLE  # False once the journal failed
        self._fd: int | None = None
        self._size = 0  # bytes written since it was last emptied

    def file(self, suffix: str = _SUFFIX) -> Path:
        """This writer's journal path (or its temporary twin)."""
        return self.directory / (self.writer + suffix)

    def append(self, seq: int, body: bytes) -> None:
        """Append the line of row ``seq``, opening the journal first."""
        fd = self._fd
        if fd is None:
            try:
                fd = self._fd = self._new(b"")
            except OSError as exc:
                self._failed(exc)
                return
            self._size = 0
        line = b"%d\t%s\n" % (seq, body)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            self._failed(exc)
            return
        self._size += written

    def _new(self, data: bytes) -> int:
        """Open, lock and fill this writer's journal file; return its descriptor.

        It is written under a temporary name and renamed into place already locked, so a
        recovering process never sees (and takes for a dead writer's) an unlocked journal.
        Replacing the previous file this way is atomic: a kill leaves one or the other.
        """
        self.directory.mkdir(exist_ok=True)
        tmp = self.file(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            if data and os.write(fd, data) != len(data):
                raise OSError("short write to the journal")
            os.replace(tmp, self.file())
        except BaseException:
            os.close(fd)
            raise
        return fd

    def trim(self, all_committed: bool, pending: Sequence[tuple[int, LedgerRow]]) -> None:
        """After a commit: drop the committed lines (``pending``: every uncommitted row)."""
        fd = self._fd
        if fd is None or not self.enabled or self._size == 0:
            return
        try:
            if all_committed:
                os.ftruncate(fd, 0)  # O_APPEND: the next line goes to offset 0
                self._size = 0
            elif self._size > _JOURNAL_LIMIT:
                # Rows keep coming: rewrite the journal with the pending rows only.
                data = b"".join(
                    b"%d\t%s\n" % (seq, body)
                    for seq, row in pending
                    if (body := journal_body(row)) is not None
                )
                self._fd = self._new(data)
                self._size = len(data)
                os.close(fd)
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        """Stop journaling; rows are still batched as before.

        An open journal stays open and locked, so no other process imports rows this
        one is still going to commit.
        """
        self.enabled = False
        logger.warning("ledger %s: journal unavailable (%s); a hard kill may lose the rows "
                       "recorded in the last flush_interval", self.label, exc)  # fmt: skip

    def detach(self) -> int | None:
        """Take the open descriptor (to :meth:`remove` once every row is committed)."""
        fd, self._fd = self._fd, None
        return fd

    def remove(self, fd: int) -> None:
        """Delete the journal while still holding its lock, then release it."""
        try:
            self.file().unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("ledger %s: cannot delete journal: %s", self.label, exc)
        finally:
            os.close(fd)

    def forget(self) -> None:
        """In a forked child: close this copy of the descriptor; the parent's lock stays."""
        fd = self.detach()
        if fd is not None:
            try:
                os.close(fd)
            except OSError:  # pragma: no cover
                pass


def read_journal(data: bytes, name: object) -> list[tuple[int, LedgerRow]]:
    """The (seq, row) lines of a journal file, in sequence order; bad lines are skipped.

    The last line lacks its newline when the kill cut its write short.
    """
    found: dict[int, LedgerRow] = {}
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            seq_text, body = line.split(b"\t", 1)
            values = json.loads(body)
            if not isinstance(values, list) or len(values) not in (V1_FIELDS, len(COLUMNS)):
                raise ValueError("not a row")
            found[int(seq_text)] = from_values(values)
        except (ValueError, TypeError) as exc:  # JSON, UTF-8 and int() errors included
            cut = " (a write cut short)" if number == len(lines) else ""
            logger.warning("ledger journal %s: ignoring malformed line %d%s: %s",
                           name, number, cut, exc)  # fmt: skip
    return sorted(found.items())


def recover_journals(
    directory: Path, own_writer: str, commit: CommitRecovered, label: object
) -> None:
    """Commit the journaled rows of writers that died before committing them."""
    if not AVAILABLE:
        return
    try:
        files = sorted(directory.glob("*" + _SUFFIX))
    except OSError:
        return
    for file in files:
        try:
            _recover(file, own_writer, commit, label)
        except (OSError, sqlite3.Error) as exc:
            logger.warning("ledger %s: cannot recover journal %s yet: %s",
                           label, file.name, exc)  # fmt: skip


def _recover(file: Path, own_writer: str, commit: CommitRecovered, label: object) -> None:
    """Import ``file`` if its writer is dead (its lock is free), then delete it."""
    writer = file.name[: -len(_SUFFIX)]
    if writer == own_writer:
        return
    try:
        fd = os.open(file, os.O_RDONLY)
    except FileNotFoundError:
        return  # its writer closed, or another process recovered it
    try:
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer is alive
        try:
            if not os.path.samestat(os.fstat(fd), os.stat(file)):
                return  # replaced by its (live) writer after we opened it
        except FileNotFoundError:
            return  # deleted after we opened it
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        rows = read_journal(b"".join(chunks), file)
        if rows:
            imported = commit(rows, writer)
            if imported:
                logger.info("ledger %s: recovered %d row(s) of a writer that died "
                            "before committing them", label, imported)  # fmt: skip
        file.unlink()
    finally:
        os.close(fd)
