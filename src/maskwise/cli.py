"""The ``maskwise`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import maskwise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskwise",
        description=(
            "maskwise: masking for training and fine-tuning PyTorch models "
            "(input, output, attention and dynamic masks)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"maskwise {maskwise.__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
