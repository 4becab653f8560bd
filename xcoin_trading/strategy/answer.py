"""The strategy's answer is an Arrow IPC stream written by code we do not trust. Before pyarrow
decodes it, its framing and message headers are walked here: no compression (a 100 KB body can
claim gigabytes), no dictionaries, no nested types, the row count of the candles, a bounded number
of columns, every buffer inside its message body; then pyarrow's full validation checks every value
inside its buffer. Uncompressed and flat, decoding is zero-copy over the bytes already read, so
memory stays bounded by the (capped) answer size.
"""

from __future__ import annotations

import struct

import polars as pl
import pyarrow as pa

MAX_COLUMNS = 32
SCHEMA, DICTIONARY_BATCH, RECORD_BATCH = 1, 2, 3  # Arrow's MessageHeader union tags


class BadAnswer(ValueError):
    pass


def shown(value: object, limit: int = 60) -> str:
    """A value the strategy returned, as an error message shows it: its repr, cut to `limit`
    characters (the strategy chooses its size, and the message is stored and served)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _u32(b: memoryview, at: int) -> int:
    return struct.unpack_from("<I", b, at)[0]


def _table_field(b: memoryview, table: int, index: int) -> int | None:
    """Absolute position of field `index` of the flatbuffer table at `table` (None: absent)."""
    vtable = table - struct.unpack_from("<i", b, table)[0]
    vsize = struct.unpack_from("<H", b, vtable)[0]
    slot = 4 + 2 * index
    if slot + 2 > vsize:
        return None
    offset = struct.unpack_from("<H", b, vtable + slot)[0]
    return table + offset if offset else None


def _vector(b: memoryview, at: int) -> tuple[int, int]:
    """(first element position, length) of the vector referenced at `at`."""
    start = at + _u32(b, at)
    return start + 4, _u32(b, start)


def _check_batch(meta: memoryview, header: int, body_length: int, rows: int) -> int:
    if _table_field(meta, header, 3) is not None:
        raise BadAnswer("is compressed (only uncompressed Arrow IPC is accepted)")
    at = _table_field(meta, header, 0)
    length = struct.unpack_from("<q", meta, at)[0] if at is not None else 0
    if not 0 <= length <= rows:
        raise BadAnswer(f"claims {length} rows for {rows} candles")
    nodes_at = _table_field(meta, header, 1)
    if nodes_at is not None:
        first, count = _vector(meta, nodes_at)
        if count > MAX_COLUMNS * 2:
            raise BadAnswer(f"has {count} field nodes (at most {MAX_COLUMNS} columns)")
        for i in range(count):
            if not 0 <= struct.unpack_from("<q", meta, first + 16 * i)[0] <= length:
                raise BadAnswer("has a column longer than its batch")
    buffers_at = _table_field(meta, header, 2)
    if buffers_at is not None:
        first, count = _vector(meta, buffers_at)
        for i in range(count):
            offset, size = struct.unpack_from("<qq", meta, first + 16 * i)
            if offset < 0 or size < 0 or offset + size > body_length:
                raise BadAnswer("has a buffer outside its message body")
    return length


def read_answer(data: bytes, rows: int) -> pl.DataFrame:
    """The frame in `data`, or BadAnswer naming what does not fit `rows` candles."""
    view = memoryview(data)
    pos, total, schema_seen = 0, 0, False
    try:
        while pos + 8 <= len(view):
            if _u32(view, pos) == 0xFFFFFFFF:
                pos += 4
            meta_len = struct.unpack_from("<i", view, pos)[0]
            pos += 4
            if meta_len == 0:
                break  # end of stream
            if meta_len < 0 or pos + meta_len > len(view):
                raise BadAnswer("is truncated or malformed")
            meta = view[pos : pos + meta_len]
            pos += meta_len
            root = _u32(meta, 0)
            kind_at, header_at, body_at = (_table_field(meta, root, i) for i in (1, 2, 3))
            kind = meta[kind_at] if kind_at is not None else 0
            body_length = struct.unpack_from("<q", meta, body_at)[0] if body_at is not None else 0
            if body_length < 0 or pos + body_length > len(view):
                raise BadAnswer("is truncated or malformed")
            if kind == SCHEMA:
                if schema_seen:
                    raise BadAnswer("has two schemas")
                schema_seen = True
                schema = pa.ipc.read_schema(pa.py_buffer(bytes(view[pos - meta_len - 8 : pos])))
                if len(schema) > MAX_COLUMNS:
                    raise BadAnswer(f"has {len(schema)} columns (at most {MAX_COLUMNS})")
                for f in schema:
                    if pa.types.is_dictionary(f.type) or pa.types.is_nested(f.type):
                        raise BadAnswer(f"column {shown(f.name)} has type {f.type} (only flat columns)")
            elif kind == RECORD_BATCH and schema_seen and header_at is not None:
                total += _check_batch(meta, header_at + _u32(meta, header_at), body_length, rows)
                if total > rows:
                    raise BadAnswer(f"has more than {rows} rows")
            else:
                raise BadAnswer(f"has an Arrow message of type {kind} (only a schema and record batches)")
            pos += body_length
    except (struct.error, IndexError, pa.ArrowException) as exc:
        raise BadAnswer(f"is malformed ({type(exc).__name__})") from None
    if not schema_seen:
        raise BadAnswer("is empty")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        # The walk above keeps buffers inside the body, not values inside their buffers: crafted
        # string offsets or a short number buffer would have polars read the worker's memory (and
        # echo it in an error) or crash it. Full validation checks offsets, lengths and UTF-8.
        table.validate(full=True)
        frame = pl.from_arrow(table, rechunk=False)
    except (Exception, pl.exceptions.PanicException) as exc:  # a Rust panic is a BaseException
        raise BadAnswer(f"is unreadable ({type(exc).__name__})") from None
    if not isinstance(frame, pl.DataFrame):  # a Table always converts to a frame; a Series is no answer
        raise BadAnswer(f"is a {type(frame).__name__}, not a table")
    return frame
