"""Runs inside the sandbox. Imports polars first (a spare sandbox is started ahead of its job), then
reads the job from stdin (params JSON, source, candles as an Arrow IPC stream, each length-prefixed),
calls the user's `signals`, and writes the frame as an uncompressed Arrow IPC stream to the answer
pipe whose fd is argv[1]. Imports nothing from xcoin. Everything it reports is untrusted by the
parent: the exit status only picks a category, and the last `xcoin-strategy-error:` line of its
output is shown to the strategy's author clipped and labelled as the strategy's own words.
"""

import io
import json
import os
import struct
import sys
import traceback

import polars as pl

REPORT = "xcoin-strategy-error: "


def read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("job truncated")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def main(answer_fd: int) -> int:
    sizes = struct.unpack("<III", read_exactly(0, 12))
    params_json, source, candles_ipc = (read_exactly(0, n) for n in sizes)
    candles = pl.read_ipc_stream(io.BytesIO(candles_ipc))
    params = json.loads(params_json)
    namespace = {"__name__": "user_strategy", "__file__": "<strategy>"}
    try:
        exec(compile(source.decode(), "<strategy>", "exec"), namespace)
        fn = namespace.get("signals")
        if not callable(fn):
            raise TypeError("does not define a function signals(candles, params)")
        defaults = namespace.get("DEFAULT_PARAMS") or {}
        out = fn(candles, {**defaults, **params} if isinstance(defaults, dict) else params)
        if not isinstance(out, pl.DataFrame):
            raise TypeError(f"signals() must return a polars DataFrame, got {type(out).__name__}")
        # Dictionary-encoded columns are refused by the parent: send Enum/Categorical as strings.
        out = out.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String))
        with os.fdopen(answer_fd, "wb") as fh:
            out.write_ipc_stream(fh, compression="uncompressed", compat_level=pl.CompatLevel.oldest())
    except MemoryError:  # one allocation over the per-process address-space limit
        return 4
    except BaseException as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f" at line {f.lineno}" for f in reversed(tb) if f.filename == "<strategy>"), "")
        message = " ".join(str(exc).split())[:300]
        sys.stdout.write(f"\n{REPORT}{type(exc).__name__}: {message}{where}\n")
        return 3
    return 0


if __name__ == "__main__":
    code = main(int(sys.argv[1]))
    # Everything is written and closed; skip the interpreter's teardown (~90 ms with polars loaded).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
