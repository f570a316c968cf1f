"""docs/RESULTS.md: every generated report block (the summary at its top, and the tables of
the controller comparison) is what ``maskwise report`` computes from the per-run records it
cites (every number recomputed), the committed summary files are current, and every results
folder a block cites has its reproducing command written in the page."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("scipy")

from maskwise.experiments.summary import report, rows_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "RESULTS.md"
#: A generated block: ``<!-- maskwise report[ NAME]: start -->`` ... ``: end -->``.
BLOCK = re.compile(
    r"<!-- maskwise report(?P<name>[^:]*): start -->"
    r"(?P<body>.*?)"
    r"<!-- maskwise report(?P=name): end -->",
    re.S,
)


def _blocks() -> dict[str, str]:
    blocks = {m["name"].strip() or "summary": m["body"] for m in BLOCK.finditer(PAGE.read_text())}
    assert "summary" in blocks, f"{PAGE} has no generated summary block"
    return blocks


BLOCKS = sorted(_blocks())


def _command(name: str) -> tuple[list[Path], Path, dict[str, Any]]:
    """The cited folders, the output folder and the options of a block's command."""
    m = re.search(r"`(maskwise report [^`]+)`", _blocks()[name])
    assert m, f"the {name} block does not cite its `maskwise report ...` command"
    argv = shlex.split(m.group(1))[2:]
    options: dict[str, Any] = {}
    for flag in ("--metric", "--against"):
        if flag in argv:
            i = argv.index(flag)
            options[flag[2:]] = argv[i + 1]
            del argv[i : i + 2]
    i = argv.index("--out")
    out = Path(argv[i + 1])
    dirs = [Path(a) for a in argv[:i] + argv[i + 2 :]]
    return [ROOT / d for d in dirs], ROOT / out, options


@pytest.mark.parametrize("name", BLOCKS)
def test_block_is_recomputed_from_the_cited_runs(name: str) -> None:
    dirs, _, options = _command(name)
    rows = report(dirs, **options)
    assert rows_markdown(rows).strip() in _blocks()[name]


@pytest.mark.parametrize("name", BLOCKS)
def test_committed_summary_files_are_current(name: str) -> None:
    dirs, out, options = _command(name)
    rows = report(dirs, **options)
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(rows).replace(str(ROOT) + "/", ""))
    assert (out / "summary.md").read_text().startswith(rows_markdown(rows))
    assert (out / "forest.png").is_file()


@pytest.mark.parametrize("name", BLOCKS)
def test_every_cited_result_has_its_command_on_the_page(name: str) -> None:
    text = PAGE.read_text()
    dirs, _, _ = _command(name)
    for d in dirs:
        command = json.loads((d / "results.json").read_text())["command"]
        assert command in text, f"{d.name}: its command is not written in RESULTS.md"
