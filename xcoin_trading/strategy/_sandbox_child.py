"""Runs inside the sandbox: reads candles + params from its work dir, calls the user's `signals`,
writes the result. Imports nothing from xcoin (the parent validates the output)."""

import json
import os
import sys
import traceback


def main(work: str) -> int:
    import polars as pl

    candles = pl.read_ipc(os.path.join(work, "candles.arrow"), memory_map=False)
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
    sys.exit(main(sys.argv[1]))
