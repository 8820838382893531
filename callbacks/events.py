"""Reading, tailing and purging a run's event files, damaged records included.

The one reader of event files for the harness, its scripts and its tests.

An event file is a TFRecord file: each record is a little-endian uint64
length, the masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C
of the data. TensorFlow's reader stops at the first damaged record; this one
skips it and finds the next intact record by its checksums, so one bad record
(a crash, a bad sector) costs that record alone, not everything after it.

TF2 writes scalars, histograms and text as *tensor* summaries; `read` returns
every one of them in file order, a step written twice seen twice (TensorBoard's
purge of orphaned data is not applied), and `Summaries.latest` the view
TensorBoard shows, one value per step. Nothing here imports TensorFlow, so a
script can poll a running process cheaply (`EventTail`).
"""

import dataclasses
import glob
import os
import struct
from collections.abc import Iterable, Iterator

import numpy as np
from tensorboard.compat.proto import event_pb2, graph_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.util import tensor_util

from . import files

PATTERN = "events.out.tfevents.*"
# Summaries written at the global step, not the epoch: tags with these prefixes, and
# everything in MODEL_FOLDER (the tf.summary calls of the user's model).
GLOBAL_STEP_PREFIXES = ("batch_", "evaluation_")
MODEL_FOLDER = "model"
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = _LENGTH.size + _CRC.size
_FOOTER = _CRC.size


# --- Records ---------------------------------------------------------------------------


def read_records(path: str) -> tuple:
    """The intact records of `path`, in order, and how many damaged stretches it had.

    Returns:
        (records, damaged): the data of each record whose checksums hold, and
        the number of places where bytes that form no intact record were skipped.
    """
    with open(path, "rb") as f:
        records, damaged, _ = _scan(f.read(), stop_at_partial=False)
    return records, damaged


def write_records(path: str, records: Iterable[bytes]) -> None:
    """Replaces `path` with `records`, atomically (see `files.atomic_write`)."""

    def write(temporary: str) -> None:
        with open(temporary, "wb") as f:
            for record in records:
                length = _LENGTH.pack(len(record))
                f.write(
                    length
                    + _CRC.pack(masked_crc32c(length))
                    + record
                    + _CRC.pack(masked_crc32c(record))
                )

    files.atomic_write(path, write)


def event_files(folder: str) -> list:
    """The event files directly in `folder` (not its sub-folders), in name order."""
    return sorted(glob.glob(os.path.join(glob.escape(str(folder)), PATTERN)))


def _scan(content: bytes, *, stop_at_partial: bool) -> tuple:
    """(records, damaged stretches, bytes consumed) of `content`; with `stop_at_partial`
    a record still being written at the end is left unconsumed instead of skipped."""
    records, damaged, position = [], 0, 0
    while position < len(content):
        record = _record_at(content, position)
        if record is not None:
            records.append(record)
            position += _HEADER + len(record) + _FOOTER
        elif stop_at_partial and _is_partial(content, position):
            break
        else:
            damaged += 1
            position = _next_record(content, position + 1)
    return records, damaged, position


def _record_at(content: bytes, position: int) -> bytes | None:
    """The data of the intact record starting at `position`, or None."""
    length = _length_at(content, position)
    if length is None:
        return None
    end = position + _HEADER + length
    if end + _FOOTER > len(content):
        return None
    record = content[position + _HEADER : end]
    (data_crc,) = _CRC.unpack_from(content, end)
    return record if masked_crc32c(record) == data_crc else None


def _length_at(content: bytes, position: int) -> int | None:
    """The data length of a record whose header at `position` is intact, or None."""
    if position + _HEADER > len(content):
        return None
    length_bytes = content[position : position + _LENGTH.size]
    (length_crc,) = _CRC.unpack_from(content, position + _LENGTH.size)
    return _LENGTH.unpack(length_bytes)[0] if masked_crc32c(length_bytes) == length_crc else None


def _is_partial(content: bytes, position: int) -> bool:
    """Whether the bytes from `position` on are the start of a record not yet complete."""
    if position + _HEADER > len(content):
        return True
    length = _length_at(content, position)
    return length is not None and position + _HEADER + length + _FOOTER > len(content)


def _next_record(content: bytes, start: int) -> int:
    """The position of the first intact record at or after `start` (or the end)."""
    for position in range(start, len(content)):
        if _record_at(content, position) is not None:
            return position
    return len(content)


# --- Summaries -------------------------------------------------------------------------


def events(folder: str) -> Iterator[event_pb2.Event]:
    """The intact events of the event files directly in `folder`, in file order."""
    for path in event_files(folder):
        for record in read_records(path)[0]:
            yield event_pb2.Event.FromString(record)


@dataclasses.dataclass
class Summaries:
    """The tensor summaries (scalars, histograms, text) and graph of one folder."""

    tensors: dict = dataclasses.field(default_factory=dict)  # {tag: [(step, ndarray), ...]}
    metadata: dict = dataclasses.field(default_factory=dict)  # {tag: SummaryMetadata}
    graph: graph_pb2.GraphDef | None = None

    def values(self, tag: str) -> list:
        """[(step, ndarray), ...] of one tag in file order, duplicates kept."""
        return self.tensors.get(tag, [])

    def scalars(self, tag: str) -> list:
        """[(step, float), ...] of one scalar tag in file order, duplicates kept."""
        return [(step, float(value)) for step, value in self.values(tag)]

    def scalars_named(self, prefix: str) -> dict:
        """{tag: [(step, float), ...]} of every tag starting with `prefix` (scalars only)."""
        return {tag: self.scalars(tag) for tag in sorted(self.tensors) if tag.startswith(prefix)}

    def histograms(self, tag: str) -> list:
        """[(step, rows of [left edge, right edge, count]), ...] of one histogram tag."""
        return [
            (step, np.asarray(value, np.float64).reshape(-1, 3)) for step, value in self.values(tag)
        ]

    def steps(self, tag: str) -> list:
        """The steps of one tag in file order, a step written twice seen twice."""
        return [step for step, _ in self.values(tag)]

    def latest(self, tag: str) -> dict:
        """{step: value} of one tag: what TensorBoard shows, the last write of a step."""
        return dict(self.values(tag))


def read(folder: str) -> Summaries:
    """Every tensor summary and the graph in `folder`'s event files (none if it is missing)."""
    found = Summaries()
    for event in events(folder):
        if event.HasField("graph_def"):
            found.graph = graph_pb2.GraphDef.FromString(event.graph_def)
        for value in event.summary.value:
            if value.HasField("tensor"):
                found.tensors.setdefault(value.tag, []).append(
                    (event.step, tensor_util.make_ndarray(value.tensor))
                )
                if value.HasField("metadata"):
                    found.metadata.setdefault(value.tag, value.metadata)
    return found


def histogram_count(buckets: np.ndarray) -> float:
    """How many values a histogram summary (rows of [left, right, count]) holds."""
    return float(np.asarray(buckets)[:, 2].sum())


class EventTail:
    """The steps of one tag in a folder's event files, read as the files grow.

    Each poll reads only what was appended since the last one, and only complete
    records (one being written is left for the next poll), so it is cheap enough
    to poll a running process.
    """

    def __init__(self, folder: str, tag: str) -> None:
        self.folder = folder
        self.tag = tag
        self.steps: list = []
        self._offsets: dict = {}

    def poll(self) -> list:
        """Reads what was appended since the last call; returns every step so far."""
        for path in event_files(self.folder):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                records, _, consumed = _scan(f.read(), stop_at_partial=True)
            self._offsets[path] = offset + consumed
            for record in records:
                event = event_pb2.Event.FromString(record)
                if any(value.tag == self.tag for value in event.summary.value):
                    self.steps.append(event.step)
        return self.steps


# --- The purge before a resume ---------------------------------------------------------


def purge_after(run_dir: str, global_step: int, epochs_done: int) -> tuple:
    """Drops summaries a resumed run is about to write again.

    A run stopped between checkpoints has written summaries for steps it will
    redo after resuming from the last checkpoint. Like TensorBoard's own purge
    of orphaned data, this removes them, so no step is shown twice: batch
    summaries (see GLOBAL_STEP_PREFIXES) after `global_step`, epoch summaries
    after `epochs_done`, and
    at step 0 (a run resumed before its first step) everything, the graph
    and the run's hyperparameters included. A damaged record is dropped alone;
    the records after it are kept. Each event file is rewritten atomically.

    Returns:
        (dropped, damaged): the summaries dropped to be written again, and the
        damaged stretches of records skipped (their content is lost).
    """
    dropped = damaged_total = 0
    for folder in ("", "train", "validation", MODEL_FOLDER):
        for path in event_files(os.path.join(run_dir, folder)):
            records, damaged = read_records(path)
            kept = [
                record
                for record in records
                if not _is_orphan(
                    event_pb2.Event.FromString(record),
                    global_step,
                    epochs_done,
                    folder == MODEL_FOLDER,
                )
            ]
            if damaged or len(kept) < len(records):
                write_records(path, kept)
                dropped += len(records) - len(kept)
                damaged_total += damaged
    return dropped, damaged_total


def _is_orphan(
    event: event_pb2.Event, global_step: int, epochs_done: int, in_model_folder: bool
) -> bool:
    """Whether the resumed run writes `event` again (see `purge_after`)."""
    if not global_step:
        return not event.HasField("file_version")
    if not event.HasField("summary") or not event.summary.value:
        return False
    if in_model_folder:  # written at the step count before the step that wrote it
        return event.step >= global_step
    at_global_step = event.summary.value[0].tag.startswith(GLOBAL_STEP_PREFIXES)
    return event.step > (global_step if at_global_step else epochs_done)
