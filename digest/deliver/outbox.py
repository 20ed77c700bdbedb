"""The ``outbox`` backend: one ``.eml`` file per recipient and edition, written atomically.

Each file is written to a hidden temporary name, flushed to disk, then renamed into
place, so a reader (or a crash) never sees half a message. Files are 0600 (mkstemp's
mode) in a folder created 0700: they are personal mail. The embedded default:
it needs no network and no keys, and any mail client opens the files.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import faults
from ..errors import PermanentDeliveryError, RecipientError, TransientDeliveryError
from ..model import Batch, Composed
from ..state import permissions
from .base import Letterhead, Personalizer, Sent
from .message import check_edition, encode

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")
_TEMP_PREFIX = ".digest-"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch's files (name, bytes), and the recipients left out of it, with why."""

    files: list[tuple[str, bytes]]
    rejected: Mapping[int, str]


def file_name(batch: Batch, subscriber_id: int, email: str) -> str:
    """``<edition>-<subscriber>-<address>.eml``; a one-off mail (edition 0: a sign-up's
    confirmation) also carries its number, so a second one does not replace the first."""
    one_off = f"{batch.number:06d}-" if batch.edition_id == 0 else ""
    safe = _UNSAFE.sub("_", email)[:100]
    return f"{batch.edition_id:05d}-{one_off}{subscriber_id:06d}-{safe}.eml"


def _temp_prefix() -> str:
    """Temporary files carry the writing process's id: ``open`` removes only those of
    processes that are gone (a crash), never one another process is writing."""
    return f"{_TEMP_PREFIX}{os.getpid()}-"


def _writer_alive(name: str) -> bool:
    pid = name[len(_TEMP_PREFIX) :].split("-", 1)[0]
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but someone else's
        return True
    return True


class OutboxBackend:
    name = "outbox"
    batch_size = 1

    def __init__(self, folder: Path, letterhead: Letterhead, personalizer: Personalizer) -> None:
        self.folder = folder
        self.letterhead = letterhead
        self.personalizer = personalizer

    def probe(self) -> str:
        try:
            permissions.make_folder(self.folder)  # 0700: file names are addresses
            with tempfile.NamedTemporaryFile(prefix=_TEMP_PREFIX, dir=self.folder):
                pass
        except OSError as exc:
            raise PermanentDeliveryError(
                f"cannot write into the outbox folder {self.folder}: {exc.strerror or exc}",
                fatal=True,
            ) from exc
        return f"the outbox folder {self.folder} is writable"

    def open(self, composed: Composed) -> OutboxSender:
        check_edition(composed, self.letterhead, self.personalizer)
        try:
            permissions.make_folder(self.folder)  # 0700: file names are addresses
        except OSError as exc:
            raise PermanentDeliveryError(
                f"cannot create the outbox folder {self.folder}: {exc.strerror}", fatal=True
            ) from exc
        for temp in self.folder.glob(_TEMP_PREFIX + "*"):
            if not _writer_alive(temp.name):  # left by a crash mid-write
                temp.unlink(missing_ok=True)
        return OutboxSender(self, composed)


class OutboxSender:
    def __init__(self, backend: OutboxBackend, composed: Composed) -> None:
        self.backend = backend
        self.composed = composed

    def prepare(self, batch: Batch) -> Prepared:
        """Each recipient's file, or why it cannot be written (theirs alone)."""
        files = []
        rejected: dict[int, str] = {}
        for recipient in batch.recipients:
            values = self.backend.personalizer.values(recipient)
            try:
                message = encode(self.composed, recipient, values, self.backend.letterhead)
            except RecipientError as exc:
                rejected[recipient.subscriber_id] = str(exc)
                continue
            name = file_name(batch, recipient.subscriber_id, recipient.email)
            files.append((name, message.data))
        return Prepared(files, rejected)

    def deliver(self, prepared: Prepared) -> Sent:
        if not prepared.files:  # every recipient's message failed: nothing to write
            raise PermanentDeliveryError("; ".join(prepared.rejected.values()))
        for name, data in prepared.files:
            write_atomically(self.backend.folder / name, data)
        names = ",".join(name for name, _ in prepared.files)
        return Sent(provider_id=names, rejected=prepared.rejected)

    def send(self, batch: Batch) -> Sent:
        return self.deliver(self.prepare(batch))

    def close(self) -> None:
        pass


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent or complete."""
    try:
        fd, temp = tempfile.mkstemp(prefix=_temp_prefix(), dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                faults.point("outbox-mid-write")  # crash tests: half a file on disk
                f.write(data[half:])
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    except OSError as exc:
        raise TransientDeliveryError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
