"""Reading and rewriting the records of an event file, damaged ones included.

An event file is a TFRecord file: each record is a little-endian uint64
length, the masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C
of the data. TensorFlow's reader stops at the first damaged record; this one
skips it and finds the next intact record by its checksums, so one bad record
(a crash, a bad sector) costs that record alone, not everything after it.
"""

import struct
from collections.abc import Iterable

from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from callbacks import files

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = _LENGTH.size + _CRC.size
_FOOTER = _CRC.size


def read_records(path: str) -> tuple:
    """The intact records of `path`, in order, and how many damaged stretches it had.

    Returns:
        (records, damaged): the data of each record whose checksums hold, and
        the number of places where bytes that form no intact record were skipped.
    """
    with open(path, "rb") as f:
        content = f.read()
    records, damaged, position = [], 0, 0
    while position < len(content):
        record = _record_at(content, position)
        if record is None:
            damaged += 1
            position = _next_record(content, position + 1)
        else:
            records.append(record)
            position += _HEADER + len(record) + _FOOTER
    return records, damaged


def write_records(path: str, records: Iterable[bytes]) -> None:
    """Replaces `path` with `records`, atomically (see `files.atomic_write`)."""
    def write(temporary: str) -> None:
        with open(temporary, "wb") as f:
            for record in records:
                length = _LENGTH.pack(len(record))
                f.write(length + _CRC.pack(masked_crc32c(length)) + record
                        + _CRC.pack(masked_crc32c(record)))

    files.atomic_write(path, write)


def _record_at(content: bytes, position: int):
    """The data of the intact record starting at `position`, or None."""
    end_of_header = position + _HEADER
    if end_of_header > len(content):
        return None
    length_bytes = content[position:position + _LENGTH.size]
    (length_crc,) = _CRC.unpack_from(content, position + _LENGTH.size)
    if masked_crc32c(length_bytes) != length_crc:
        return None
    (length,) = _LENGTH.unpack(length_bytes)
    end = end_of_header + length
    if end + _FOOTER > len(content):
        return None
    record = content[end_of_header:end]
    (data_crc,) = _CRC.unpack_from(content, end)
    return record if masked_crc32c(record) == data_crc else None


def _next_record(content: bytes, start: int) -> int:
    """The position of the first intact record at or after `start` (or the end)."""
    for position in range(start, len(content)):
        if _record_at(content, position) is not None:
            return position
    return len(content)
