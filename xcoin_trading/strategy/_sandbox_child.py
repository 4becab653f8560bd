"""Runs inside the sandbox: reads candles + params from its work dir, calls the user's `signals`,
writes the result. Imports nothing from xcoin (the parent validates the output)."""

import io
import json
import os
import sys
import traceback


def limit(memory_bytes: int, cpu_seconds: int, output_bytes: int) -> None:
    """Hard limits, set before anything else is loaded and never raisable again by this process.
    (Here rather than in a preexec_fn: that makes the parent fork its whole heap, ~13 ms per run.)"""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def main(work: str) -> int:
    import polars as pl

    with open(os.path.join(work, "candles.arrow"), "rb") as fh:
        # From memory: given a path, polars first probes it as a possible cloud URL (~55 ms per run).
        candles = pl.read_ipc(io.BytesIO(fh.read()))
    with open(os.path.join(work, "params.json")) as fh:
        params = json.load(fh)
    with open(os.path.join(work, "strategy.py")) as fh:
        source = fh.read()
    namespace = {"__name__": "user_strategy", "__file__": "<strategy>"}
    try:
        exec(compile(source, "<strategy>", "exec"), namespace)
        fn = namespace.get("signals")
        if not callable(fn):
            raise TypeError("does not define a function signals(candles, params)")
        defaults = namespace.get("DEFAULT_PARAMS") or {}
        out = fn(candles, {**defaults, **params} if isinstance(defaults, dict) else params)
        if not isinstance(out, pl.DataFrame):
            raise TypeError(f"signals() must return a polars DataFrame, got {type(out).__name__}")
        out.write_ipc(os.path.join(work, "signals.arrow"))
    except BaseException as exc:  # report the user's error to the parent, nothing else
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"line {f.lineno}" for f in reversed(tb) if f.filename == "<strategy>"), "")
        error = {"type": type(exc).__name__, "message": str(exc)[:2000], "where": where}
        with open(os.path.join(work, "error.json"), "w") as fh:
            json.dump(error, fh)
        return 3
    return 0


if __name__ == "__main__":
    limit(*(int(x) for x in sys.argv[2:5]))
    code = main(sys.argv[1])
    # Everything is written and closed; skip the interpreter's teardown (~90 ms with polars loaded,
    # inside every live candle's latency).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
