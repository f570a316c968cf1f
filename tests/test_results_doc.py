"""docs/RESULTS.md: the summary at its top is what ``maskwise report`` computes from the per-run
records it cites (every number recomputed), the committed summary files are current, and every
results folder it cites has its reproducing command written in the page."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("scipy")

from maskwise.experiments.summary import report, rows_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "RESULTS.md"
START, END = "<!-- maskwise report: start -->", "<!-- maskwise report: end -->"


def _block() -> str:
    text = PAGE.read_text()
    assert START in text and END in text, f"{PAGE} has no generated summary block"
    return text.split(START, 1)[1].split(END, 1)[0]


def _report_command() -> tuple[list[Path], Path]:
    m = re.search(r"`(maskwise report [^`]+)`", _block())
    assert m, "the summary block does not cite its `maskwise report ...` command"
    argv = shlex.split(m.group(1))[2:]
    out = Path(argv[argv.index("--out") + 1])
    dirs = [Path(a) for a in argv[: argv.index("--out")]]
    return [ROOT / d for d in dirs], ROOT / out


def test_summary_is_recomputed_from_the_cited_runs() -> None:
    dirs, _ = _report_command()
    rows = report(dirs)
    assert rows_markdown(rows).strip() in _block()


def test_committed_summary_files_are_current() -> None:
    dirs, out = _report_command()
    rows = report(dirs)
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(rows).replace(str(ROOT) + "/", ""))
    assert (out / "summary.md").read_text().startswith(rows_markdown(rows))
    assert (out / "forest.png").is_file()


def test_every_cited_result_has_its_command_on_the_page() -> None:
    text = PAGE.read_text()
    dirs, _ = _report_command()
    for d in dirs:
        command = json.loads((d / "results.json").read_text())["command"]
        assert command in text, f"{d.name}: its command is not written in RESULTS.md"
