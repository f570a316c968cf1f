"""``benchmarks/gpu.py`` (the one-step GPU run) runs on CPU with tiny shapes and writes its JSON and
Markdown with every expected row, so the script is known to work before a GPU is lent. No timing
is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_script():
    spec = importlib.util.spec_from_file_location("maskwise_bench_gpu", BENCH / "gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_run_smoke_on_cpu_writes_json_and_markdown(gpu_script, tmp_path: Path) -> None:
    argv = ["--device", "cpu", "--smoke", "--out", str(tmp_path), "--sections"]
    assert gpu_script.main([*argv, "masks,blockmask,attention"]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    md = (tmp_path / "gpu.md").read_text()
    assert report["meta"]["device"] == "cpu" and report["meta"]["smoke"] is True

    maskers = list(gpu_script.masker_cases(__import__("torch").device("cpu"), True))
    assert [r["case"] for r in report["masks"]] == maskers
    assert len(maskers) >= 14  # every masker of maskwise.functional
    for r in report["masks"]:
        assert "error" not in r, r
        assert r["no_host_sync"] == "n/a"  # checked on CUDA only
        assert f"| {r['case']} |" in md

    assert [r["case"] for r in report["blockmask"]] == [
        "causal, L=256",
        "documents (8), L=256",
        "sliding_window(256), L=256",
    ]
    assert all("ms" in r for r in report["blockmask"])

    kinds = ["causal", "causal & documents", "sliding_window", "causal & padding"]
    cases = report["attention"]
    assert len(cases) == len(kinds)
    for res, kind in zip(cases, kinds):
        assert res["case"].startswith(kind)
        assert {"attend", "dense SDPA"} <= set(res["ms"]), res  # ran and matched the reference
        assert res["errors"].get("flex") == "skipped"  # no CPU compile in a smoke run
        assert f"| {res['case']} | attend [{res['chosen']}]" in md
    for header in ("## Mask generation", "## BlockMask build", "## Attention forward + backward"):
        assert header in md


def test_markdown_shows_the_cuda_tests_and_skipped_cases(gpu_script) -> None:
    report = {
        "meta": {
            "device_name": "X",
            "torch": "t",
            "maskwise": "m",
            "commit": "c",
            "machine": "M",
            "seconds": 1.0,
            "command": "python benchmarks/gpu.py",
        },
        "tests": {
            "command": "python -m pytest -m gpu tests",
            "summary": "1 failed, 9 passed",
            "failures": ["FAILED tests/x.py::t"],
        },
        "attention": [{"case": "causal, B=1, L=16384", "skipped": "time budget spent"}],
    }
    md = gpu_script.markdown(report)
    assert "## CUDA tests" in md and "1 failed, 9 passed" in md and "- FAILED tests/x.py::t" in md
    assert "| causal, B=1, L=16384 | skipped | time budget spent |" in md
