"""Packaging: SPDX license metadata, the license file in both distributions, and an sdist that
carries the whole test suite (every tracked test file), so tests can run from it."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression_with_its_file() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # a string (PEP 639), not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])


@pytest.mark.slow
def test_sdist_carries_every_test_and_the_wheel_none(tmp_path: Path) -> None:
    pytest.importorskip("build")
    tracked = subprocess.run(
        ["git", "ls-files", "tests"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("*.tar.gz")
    (wheel,) = tmp_path.glob("*.whl")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    want = {f for f in tracked.stdout.split() if f.endswith(".py")}
    assert want and want <= names, sorted(want - names)[:5]
    assert "LICENSE" in names
    with zipfile.ZipFile(wheel) as whl:
        files = whl.namelist()
    assert not [f for f in files if f.startswith("tests/")]
    assert any(f.endswith("licenses/LICENSE") for f in files)
