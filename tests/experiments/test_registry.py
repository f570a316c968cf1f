"""maskwise.experiments.registry: every registered task declares a name, options, default data
and a factory, and builds from the command line; data comes from --data or $MASKWISE_DATA, and a
task without data says what to set and which data set fits."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from maskwise.cli import build_parser, make_task
from maskwise.experiments import registry
from maskwise.experiments.engine import Task
from maskwise.experiments.registry import DataNotFound, Option, TaskSpec, resolve_data
from tests.experiments.synth import write_text_dir

NAMES = [
    "text-classification",
    "image-classification",
    "speech-classification",
    "language-modeling",
    "translation",
    "summarization",
    "pretrain-finetune",  # registered where transformers is installed (the hf extra)
]


def test_the_seven_tasks_are_registered_in_order() -> None:
    assert registry.names() == NAMES
    assert registry.get("translation").name == "translation"
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        registry.get("nope")


@pytest.mark.parametrize("name", NAMES)
def test_every_task_builds_its_parser(name: str) -> None:
    spec = registry.get(name)
    assert spec.help and spec.description and spec.dataset and spec.data
    parser = argparse.ArgumentParser()
    for opt in spec.options:
        parser.add_argument(opt.flag, **opt.argparse_kwargs())
    defaults = vars(parser.parse_args([]))
    assert set(defaults) == {opt.dest for opt in spec.options}
    # the CLI parses the task with its defaults
    args = build_parser().parse_args(["run", name])
    assert args.task == name and args.data is None
    assert {opt.dest: getattr(args, opt.dest) for opt in spec.options} == defaults


def test_options_declare_argparse_settings() -> None:
    opt = Option("--train-size", "the first N (default %(default)s)", default=5, type=int)
    assert opt.dest == "train_size"
    parser = argparse.ArgumentParser()
    parser.add_argument(opt.flag, **opt.argparse_kwargs())
    assert parser.parse_args([]).train_size == 5 and parser.parse_args(["--train-size", "7"])
    switch = Option("--pack", "pack", flag_only=True)
    assert switch.argparse_kwargs() == {"action": "store_true", "help": "pack"}


SPEC = TaskSpec(
    name="toy",
    help="a toy",
    description="A toy task.",
    build=lambda data: data,
    data="toy/set",
    dataset="ToySet",
    builtin_data=("bundled",),
)


def test_resolve_data_from_the_flag_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "toy" / "set").mkdir(parents=True)
    env = {"MASKWISE_DATA": str(tmp_path)}
    assert resolve_data(SPEC, None, env) == str(tmp_path / "toy" / "set")
    assert resolve_data(SPEC, str(tmp_path), env) == str(tmp_path)  # --data wins
    assert resolve_data(SPEC, "bundled", {}) == "bundled"  # a name the task loads itself
    bundled = TaskSpec(**{**vars(SPEC), "data": "bundled"})
    assert resolve_data(bundled, None, {}) == "bundled"  # a built-in default needs no root


@pytest.mark.parametrize(
    ("given", "env", "message"),
    [
        (
            None,
            {},
            "no data: pass --data PATH, or set MASKWISE_DATA to a folder that holds toy/set/",
        ),
        (None, {"MASKWISE_DATA": ""}, "no data: pass --data PATH"),
        ("/nowhere/x", {}, "data not found at /nowhere/x (--data)."),
        (
            None,
            {"MASKWISE_DATA": "/nowhere"},
            "data not found at /nowhere/toy/set (MASKWISE_DATA=/nowhere): set MASKWISE_DATA to "
            "a folder that holds toy/set/, or pass --data PATH.",
        ),
    ],
)
def test_missing_data_says_what_to_set(
    given: str | None, env: dict[str, str], message: str
) -> None:
    with pytest.raises(DataNotFound) as err:
        resolve_data(SPEC, given, env)
    assert message in str(err.value) and str(err.value).endswith("Data that fits: ToySet.")


def test_make_task_honours_maskwise_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_text_dir(tmp_path / "text" / "sst2", n_train=20, n_dev=None, n_test=6)
    monkeypatch.setenv("MASKWISE_DATA", str(tmp_path))
    task = make_task(build_parser().parse_args(["run", "text-classification"]))
    assert isinstance(task, Task) and task.describe()["sizes"]["test"] == 6
    monkeypatch.setenv("MASKWISE_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(SystemExit, match="maskwise run text-classification: data not found"):
        make_task(build_parser().parse_args(["run", "text-classification"]))


def test_registering_a_task() -> None:
    assert registry.register(SPEC) is SPEC
    try:
        assert "toy" in registry.names()
        assert registry.register(SPEC) is SPEC  # the same spec again: no-op
        with pytest.raises(ValueError, match="already registered"):
            registry.register(TaskSpec(**{**vars(SPEC), "help": "another"}))
    finally:
        registry._REGISTRY.pop("toy")
