"""The command blocks of README.md and of every docs/*.md page run, each page's in order on a fresh
XCOIN_HOME of its own, exactly as written (so the docs cannot drift from the code). A block may be
preceded by `<!-- docs-test: skip (why) -->` or by
`<!-- docs-test: stdin=users create:a|b;broker add:c -->` (what is typed at a command's prompts). Every block runs under `bash -e`
from a folder whose `../shared/data` and `examples/` are the real ones; the session's fixed ports are
swapped for free ones, and whatever a block leaves running in the background is stopped after it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, shared_data_file

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- docs-test: (?P<note>[^\n]*?) -->\n)?```bash\n(?P<body>.*?)```", re.S)
# What a page's session must have answered, as the page shows it.
SHOWN = {
    "api.md": [
        '"success":true,"balances":[{"currency":"USDT","balance":"10000"',
        '"apiKey":"****0001"',
        '"strategyId":1,',  # ids as the page says: its own fresh store
        '{"error":"capital must be greater than 0"',
    ],
}


def page_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line, marker, body) of every bash block of one page, in order."""
    text = page.read_text()
    return [(text[: m.start()].count("\n") + 1, m["note"] or "", m["body"]) for m in BLOCK.finditer(text)]


def _runnable(page: Path) -> list[tuple[int, str, str]]:
    return [b for b in page_blocks(page) if not b[1].startswith("skip")]


def _typed(body: str, spec: str) -> str:
    """Each prompting command gets its own typed lines (one stdin shared by the block would be
    swallowed whole by the first command's buffered read)."""
    for item in spec.split(";"):
        command, _, typed = item.partition(":")
        lines = "".join(f"{t}\\n" for t in typed.split("|"))
        body, n = re.subn(
            rf"^xcoin {re.escape(command)}\b", f"printf '{lines}' | xcoin {command}", body, flags=re.M
        )
        assert n == 1, f"docs-test stdin names `xcoin {command}`, which the block does not run once"
    return body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_block_is_run_or_says_why_not():
    blocks = [(page.name, *block) for page in PAGES for block in page_blocks(page)]
    assert len(blocks) >= 13
    for name, line, note, _ in blocks:
        assert note == "" or note.startswith(("skip (", "stdin=")), (
            f"{name} line {line}: unknown marker {note!r}"
        )
    assert sum(1 for *_, note, _ in blocks if not note.startswith("skip")) >= 7


def test_the_readme_opens_with_the_two_commands_of_a_fresh_machine():
    text = (ROOT / "README.md").read_text()
    first = BLOCK.search(text)
    assert first and text[: first.start()].strip() == "# xcoin"  # nothing but the title before it
    commands = [line.split("#")[0].strip() for line in first["body"].splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:\n\tbash \.ci/run$", makefile, re.M)  # `make test` is what CI runs


@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=lambda p: p.name)
def test_the_command_blocks_run_in_order_on_a_fresh_home(tmp_path, page):
    shared_data_file("BTCUSDT-1m-2024-01.parquet")  # the blocks read ../shared/data
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
    (work / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XCOIN_", "COINDCX_"))}
    env |= {"XCOIN_HOME": str(tmp_path / "home"), "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    ports = {"8765": str(_free_port()), "8000": str(_free_port()), "9000": str(_free_port())}
    outputs = []
    for line, note, body in _runnable(page):
        for fixed, free in ports.items():
            body = re.sub(rf"(?<=[:= ]){fixed}\b", free, body)
        if note.startswith("stdin="):
            body = _typed(body, note.removeprefix("stdin="))
        log = tmp_path / f"block-{line}.log"
        with log.open("w") as out:  # a file, not a pipe: background servers keep a pipe open forever
            proc = subprocess.Popen(["bash", "-e", "-c", body], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            try:
                proc.wait(timeout=300)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)  # servers the block started in the background
        output = log.read_text()
        assert proc.returncode == 0, (
            f"{page.name} block at line {line} failed (exit {proc.returncode}):\n{output[-4000:]}"
        )
        assert "Traceback" not in output, f"{page.name} block at line {line}:\n{output[-4000:]}"
        outputs.append(output)
    for shown in SHOWN.get(page.name, []):
        assert shown in "".join(outputs), f"{page.name} shows {shown!r}; the run answered otherwise"
