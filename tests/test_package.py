import subprocess
import sys

import maskwise as mw
from maskwise.cli import main

SPEC_NAMES = [
    "sample_mask",
    "mask_tokens",
    "mask_words",
    "mask_spans",
    "corrupt",
    "t5_corrupt",
    "lm_labels",
    "mask_features",
]


def test_import_pulls_in_nothing_optional():
    code = (
        "import sys, maskwise, maskwise.collators, maskwise.nn\n"
        "bad = [m for m in ('transformers', 'tokenizers', 'datasets', 'lightning', 'matplotlib',"
        " 'tensorboard', 'rich', 'sklearn') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_spec_names_are_exported():
    for name in SPEC_NAMES:
        assert callable(getattr(mw, name)), name
        assert getattr(mw.functional, name) is getattr(mw, name)
    assert hasattr(mw.collators, "MLMCollator") and hasattr(mw.collators, "T5Collator")
    assert hasattr(mw.nn, "FeatureMask") and hasattr(mw.nn, "TokenMask")


def test_cli_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert mw.__version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "maskwise" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "maskwise", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "usage: maskwise" in out.stdout
