"""Instance ids: the one rule every entry point checks, and the model folder name derived from an id.

An instance id is what CloudWatch calls ``InstanceId`` (``i-0abc...``), or any name made of a safe
set: a letter or digit first, then letters, digits, ``-``, ``_``, ``.`` or ``:``, at most
``MAX_ID_LENGTH`` characters. So no id can climb out of a folder (``../``), carry control characters
or newlines into logs, or grow into a file name the file system refuses.
"""

from __future__ import annotations

import hashlib
import re

MAX_ID_LENGTH = 64
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)
FOLDER_PREFIX_LENGTH = 40


class InstanceIdError(ValueError):
    """An instance id outside the safe set; the message is one line and shows the id escaped."""


def check_instance_id(value: str) -> str:
    """The id unchanged when it is safe; else :class:`InstanceIdError` saying why, in one line."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        shown = ascii(value)[:60] if isinstance(value, str) else type(value).__name__
        raise InstanceIdError(
            f"invalid instance id {shown}: use 1-{MAX_ID_LENGTH} characters, a letter or digit first, "
            "then letters, digits, '-', '_', '.' or ':'"
        )
    return value


def is_instance_id(value: object) -> bool:
    """True for an id :func:`check_instance_id` accepts."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def folder_name(instance_id: str) -> str:
    """A model folder name that no other id shares: a readable prefix and a hash of the whole id.

    The prefix keeps only safe characters (so it is readable in ``ls``); the 16 hex digits of
    SHA-256 make two ids that differ only in punctuation or length land in different folders.
    """
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", instance_id)[:FOLDER_PREFIX_LENGTH].strip("_") or "instance"
    digest = hashlib.sha256(instance_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix}-{digest}"
