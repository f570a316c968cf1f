"""The ``maskwise`` command through ``maskwise.cli.main``: ``demo --fast`` and ``run`` for a few
steps write their results (every task); ``--help`` lists the registered tasks and each task's own
options; bad arguments and missing data stop with a message that names the bad value or what to
set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from maskwise.cli import main
from maskwise.experiments import registry
from tests.experiments.synth import (
    sentences,
    write_lines,
    write_speech_dir,
    write_text_dir,
)


def results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


def test_demo_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MASKWISE_DATA", raising=False)  # the demo needs no data
    monkeypatch.chdir(tmp_path)  # and no ../shared/data next to the working directory
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--quiet", "--out", str(out)]) == 0
    r = results(out)
    assert (r["task"], r["command"]) == (
        "image-classification",
        f"maskwise demo --fast --quiet --out {out}",
    )
    assert r["settings"]["eval_seeds"] == [2]  # --fast: one seed
    assert r["settings"]["data"]["sizes"]["train"] == 300
    assert sorted({run["variant"] for run in r["runs"]}) == ["dynamic", "none", "static"]
    assert all(run["steps"] == 6 for run in r["runs"])  # --fast: 6 steps per run
    assert {p.name for p in out.iterdir()} >= {
        "results.json",
        "results.md",
        "curves.png",
        "dynamic_rate.png",
    }
    printed = capsys.readouterr().out
    assert "| task | data | setting | arm | seeds |" in printed and str(out) in printed


def test_run_image_digits(tmp_path: Path) -> None:
    out = tmp_path / "img"
    assert (
        main(
            [
                "run",
                "image-classification",
                "--data",
                "digits",
                "--fast",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = results(out)
    assert r["task"] == "image-classification" and r["settings"]["eval_seeds"] == [2]
    assert r["settings"]["rates"] == [0.1]  # --fast: the first of the task's rates, no sweep
    assert r["settings"]["train"]["max_steps"] == 6 and r["settings"]["train"]["epochs"] == 2


def test_run_options_reach_the_task(tmp_path: Path) -> None:
    out = tmp_path / "img"
    assert (
        main(
            [
                "run",
                "image-classification",
                "--data",
                "digits",
                "--fast",
                "--quiet",
                "--out",
                str(out),
                "--train-size",
                "40",
                "--masker",
                "erase",
                "--masking",
                "none,schedule",
                "--rates",
                "0.2,0.6",
                "--target",
                "0.5",
                "--max-rate",
                "0.3",
                "--direction",
                "seed",
                "--no-tracker",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    r = results(out)
    assert (
        r["settings"]["data"]["sizes"]["train"] == 40 and r["settings"]["data"]["masker"] == "erase"
    )
    assert r["settings"]["variants"] == ["none", "schedule"] and r["settings"]["rates"] == [
        0.2,
        0.6,
    ]
    ctrl = r["settings"]["controller"]
    assert (ctrl["target"], ctrl["max_rate"], ctrl["direction"], ctrl["tracker"]) == (
        0.5,
        0.3,
        "seed",
        False,
    )
    assert r["settings"]["train"]["epochs"] == 1
    assert [row["kind"] for row in r["summary"]] == ["none", "schedule"]
    assert [row["arm"] for row in r["sweep"]] == ["schedule 0.2", "schedule 0.6"]
    assert r["settings"]["tune_seeds"] == [0, 1] and r["settings"]["eval_seeds"] == [2]


def test_run_text_synthetic(tmp_path: Path) -> None:
    data = write_text_dir(tmp_path / "data", n_train=40, n_dev=None, n_test=12)
    out = tmp_path / "text"
    assert (
        main(
            [
                "run",
                "text-classification",
                "--data",
                str(data),
                "--fast",
                "--quiet",
                "--out",
                str(out),
                "--rates",
                "0.2",
            ]
        )
        == 0
    )
    r = results(out)
    assert r["task"] == "text-classification"
    assert r["settings"]["data"]["sizes"] == {
        "train": 36,
        "dev": 4,
        "test": 12,
    }  # dev carved from train
    assert [row["arm"] for row in r["summary"]] == ["none", "static 0.2", "dynamic"]


def test_run_speech_synthetic(tmp_path: Path, cache_dir: Path) -> None:
    data = tmp_path / "wav"
    write_speech_dir(data, labels=("0", "1"), speakers=("a",), indices=range(8), n=800)
    out = tmp_path / "speech"
    assert (
        main(
            [
                "run",
                "speech-classification",
                "--data",
                str(data),
                "--fast",
                "--quiet",
                "--out",
                str(out),
                "--masking",
                "static",
                "--rates",
                "0.5",
                "--split",
                "official",
            ]
        )
        == 0
    )
    assert results(out)["settings"]["data"]["sizes"] == {"train": 5, "dev": 1, "test": 10}


def test_run_speech_speaker_split_and_report(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "wav"
    write_speech_dir(data, labels=("0", "1"), speakers=("a", "b", "c"), indices=range(3), n=800)
    out = tmp_path / "speech"
    argv = ["run", "speech-classification", "--data", str(data), "--quiet", "--out", str(out)]
    argv += ["--epochs", "1", "--seeds", "3", "--tune-seeds", "1", "--rates", "0.5,1.0"]
    argv += ["--time-width", "0.2", "--baseline-weight-decay", "0.01,0.1", "--setting", "tiny"]
    assert main(argv) == 0
    r = results(out)
    assert r["settings"]["data"]["split"] == "speakers"
    assert r["settings"]["data"]["spec_augment"]["time_width"] == 0.2
    assert r["setting"] == "tiny" and r["data"].endswith("/wav")
    assert {run["arm"] for run in r["runs"] if run["role"] == "tune"} == {
        "none wd 0.01",
        "none wd 0.1",
        "static 0.5",
        "static 1",
    }
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "summary")]) == 0
    printed = capsys.readouterr().out
    assert "| speech-classification |" in printed and "paired diff [95 % CI]" in printed
    rows = json.loads((tmp_path / "summary" / "summary.json").read_text())
    assert [row["kind"] for row in rows] == ["none", "static", "dynamic"]
    assert all(row["n_seeds"] == 3 and row["setting"] == "tiny" for row in rows)
    with pytest.raises(SystemExit, match="maskwise report: .*no results.json"):
        main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "s2")])


def test_run_records_its_own_command(tmp_path: Path) -> None:
    out = tmp_path / "img"
    main(
        [
            "run",
            "image-classification",
            "--data",
            "digits",
            "--fast",
            "--quiet",
            "--out",
            str(out),
            "--train-size",
            "40",
            "--masking",
            "none",
        ]
    )
    assert results(out)["command"].startswith("maskwise run image-classification --data digits")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2  # argparse's usage error
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--masking", "none,bogus"],
            "argument --masking: variants must be among none, static, dynamic, schedule, "
            "consistency, dynamic:accuracy, dynamic:seed, dynamic:easy, dynamic:examples, "
            "dynamic:gap, dynamic:overfit, dynamic:hold ('none,bogus' given)",
        ),
        (["--masking", "dynamic:gain"], "variants must be among none, static, dynamic, "),
        (["--masking", ","], "variants must be among none, static, dynamic, schedule, consistency"),
        (
            ["--rates", "0.1,abc"],
            "argument --rates: expected comma-separated numbers ('0.1,abc' given)",
        ),
        (["--seeds", "two"], "argument --seeds: expected an integer >= 1 ('two' given)"),
        (["--seeds", "0"], "argument --seeds: expected an integer >= 1 ('0' given)"),
        (["--jobs", "0"], "argument --jobs: expected an integer >= 1 ('0' given)"),
        (["--jobs", "2", "--threads", "2"], "--jobs 2 runs one torch thread per worker"),
        (["--tune-seeds", "-1"], "argument --tune-seeds: expected an integer >= 0 ('-1' given)"),
        (
            ["--baseline-weight-decay", "0.1,-1"],
            "argument --baseline-weight-decay: expected comma-separated finite numbers >= 0",
        ),
        (["--epochs", "-1"], "argument --epochs: expected an integer >= 1 ('-1' given)"),
        (["--threads", "0"], "argument --threads: expected an integer >= 1 ('0' given)"),
        (["--signal", "foo"], "argument --signal: invalid choice: 'foo'"),
        (["--direction", "sideways"], "argument --direction: invalid choice: 'sideways'"),
        (["--max-rate", "1.5"], "argument --max-rate: expected a number in [0, 1] ('1.5' given)"),
        (["--min-rate", "0.5", "--max-rate", "0.2"], "controller settings: min_rate must be <="),
        (["--target", "nan"], "controller settings: target must be"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_arguments(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(["run", "image-classification", "--data", "digits", *args], capsys)
    assert message in err


def test_bad_settings_fail_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import maskwise.experiments.report as report

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(report, "compare", no_training)
    base = ["run", "image-classification", "--data", "digits", "--out", str(tmp_path / "o")]
    err = _usage_error([*base, "--min-rate", "0.6", "--max-rate", "0.1"], capsys)
    assert "min_rate" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["run", "image-classification", "--data", "digits", "--out", str(blocker / "out")]
    assert "cannot write there" in _usage_error(argv, capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_fails_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(["run", "image-classification", "--device", "cuda"], capsys)
    assert "CUDA is not available on this machine" in err


def test_fast_scores_a_few_items_and_shows_evaluation(tmp_path: Path) -> None:
    import argparse

    from maskwise.cli import FAST_EVAL_ITEMS, configure
    from maskwise.experiments.engine import Variant, train_run
    from maskwise.experiments.registry import demo_task

    args = argparse.Namespace(device="cpu", epochs=None, fast=True, no_tracker=False)
    task = configure(demo_task(), args)
    assert task.train_config.eval_limit == FAST_EVAL_ITEMS
    messages: list[str] = []
    run = train_run(task, Variant("none"), 0, progress=lambda s, t, m: messages.append(m))
    assert any("scoring dev" in m for m in messages)
    assert [m.split()[-1] for m in messages if m.startswith("best epoch")] == [
        "train", "dev", "test",
    ]  # fmt: skip
    assert run.test["accuracy"] * FAST_EVAL_ITEMS == pytest.approx(
        round(run.test["accuracy"] * FAST_EVAL_ITEMS)
    )  # scored on FAST_EVAL_ITEMS images


def test_unknown_task(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(["run", "image-segmentation"], capsys)
    assert "argument TASK: invalid choice: 'image-segmentation'" in err
    assert "'text-classification'" in err  # the choices are the registered tasks


def test_options_of_another_task_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(["run", "text-classification", "--pack"], capsys)
    assert "unrecognized arguments: --pack" in err


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as err:
        main([*argv, "--help"])
    assert err.value.code == 0
    return capsys.readouterr().out


def test_run_help_lists_the_registered_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["run"], capsys)
    for spec in registry.specs():
        assert spec.name in out and spec.help.split(" (")[0] in out
    assert "MASKWISE_DATA" in out


@pytest.mark.parametrize("name", registry.names())
def test_run_task_help_shows_its_own_options(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["run", name], capsys)
    spec = registry.get(name)
    for opt in spec.options:
        assert opt.flag in out
    others = {o.flag for s in registry.specs() if s.name != name for o in s.options}
    assert not [flag for flag in others - {o.flag for o in spec.options} if flag in out]
    assert "--data" in out and "--masking" in out and "--seeds" in out
    assert " ".join(spec.data.split()) in " ".join(out.split())  # its default data


@pytest.mark.parametrize("rates", ["1.5", "-0.1"])
def test_rates_outside_zero_one_are_usage_errors(
    rates: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error(
        [
            "run",
            "image-classification",
            "--data",
            "digits",
            "--fast",
            "--quiet",
            "--train-size",
            "40",
            "--out",
            str(tmp_path),
            "--rates",
            rates,
        ],
        capsys,
    )
    assert rates in err


def test_empty_rates_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(
        [
            "run",
            "image-classification",
            "--data",
            "digits",
            "--fast",
            "--quiet",
            "--train-size",
            "40",
            "--masking",
            "none,static",
            "--out",
            str(tmp_path),
            "--rates",
            ",",
        ],
        capsys,
    )
    assert "--rates" in err


def test_missing_data_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as err:
        main(["run", "text-classification", "--data", str(missing), "--fast", "--quiet"])
    message = str(err.value.code)
    assert message.startswith(
        f"maskwise run text-classification: data not found at {missing} (--data). "
        "Data that fits: SST-2 (GLUE)"
    )
    assert not (tmp_path / "results.json").exists()


def test_no_data_says_what_to_set_and_which_data_set_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MASKWISE_DATA", raising=False)
    with pytest.raises(SystemExit) as err:
        main(["run", "speech-classification", "--fast", "--quiet", "--out", str(tmp_path)])
    message = str(err.value.code)
    assert message.startswith(
        "maskwise run speech-classification: no data: pass --data PATH, or set MASKWISE_DATA "
        "to a folder that holds speech/fsdd/."
    )
    assert "Free Spoken Digit Dataset" in message
    monkeypatch.setenv("MASKWISE_DATA", str(tmp_path))
    with pytest.raises(SystemExit, match=r"data not found at .*speech/fsdd \(MASKWISE_DATA="):
        main(["run", "speech-classification", "--fast", "--quiet", "--out", str(tmp_path)])


def test_maskwise_data_is_the_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_text_dir(tmp_path / "root" / "text" / "sst2", n_train=20, n_dev=None, n_test=6)
    monkeypatch.setenv("MASKWISE_DATA", str(tmp_path / "root"))
    out = tmp_path / "out"
    argv = ["run", "text-classification", "--fast", "--quiet", "--masking", "none"]
    assert main([*argv, "--out", str(out)]) == 0
    assert results(out)["settings"]["data"]["sizes"] == {"train": 18, "dev": 2, "test": 6}


def test_bad_data_files_name_the_file(tmp_path: Path) -> None:
    data = write_text_dir(tmp_path / "data", n_train=10, n_dev=None, n_test=4)
    (data / "test.txt").unlink()
    with pytest.raises(
        SystemExit,
        match=r"maskwise run text-classification: .*data has no test file "
        r"\(a file name containing 'test'\)",
    ):
        main(
            [
                "run",
                "text-classification",
                "--data",
                str(data),
                "--fast",
                "--quiet",
                "--out",
                str(tmp_path / "o"),
            ]
        )


def test_cli_runs_the_sequence_tasks(tmp_path: Path) -> None:
    lm = tmp_path / "lm.txt"
    lm.write_text("\n\n".join(f"SPEAKER {i}:\n" + s for i, s in enumerate(sentences(30, 4))))
    mt = tmp_path / "mt"
    for split, n, seed in (("train", 40, 5), ("val", 6, 6), ("test", 6, 7)):
        write_lines(mt / f"{split}.fr", sentences(n, seed))
        write_lines(mt / f"{split}.it", [s.upper() for s in sentences(n, seed)])
    summ = tmp_path / "summ.jsonl"
    summ.write_text(
        "".join(json.dumps({"text": s * 3, "summary": s}) + "\n" for s in sentences(40, 8))
    )
    cases = [
        ("language-modeling", ["--data", str(lm), "--pack", "--key-drop", "--noise", "unigram"]),
        (
            "translation",
            ["--data", str(mt), "--src-lang", "fr", "--tgt-lang", "it", "--train-size", "30"],
        ),
        ("summarization", ["--data", str(summ)]),
    ]
    for task, extra in cases:
        out = tmp_path / task
        argv = ["run", task, *extra, "--fast", "--quiet", "--masking", "none,dynamic:seed"]
        assert main([*argv, "--out", str(out)]) == 0
        r = results(out)
        assert r["task"] == task and {run["variant"] for run in r["runs"]} == {"none", "dynamic"}
        assert {run["arm"] for run in r["runs"]} == {"none", "dynamic seed"}
        assert r["settings"]["named_controllers"]["dynamic seed"]["direction"] == "seed"
        assert r["settings"]["controller"]["direction"] == "curriculum"  # the task's default
        assert all(0 < run["steps"] <= 6 for run in r["runs"])  # --fast: at most 6 steps
    assert results(tmp_path / "translation")["settings"]["data"]["sizes"]["train"] == 30
    data = results(tmp_path / "language-modeling")["settings"]["data"]
    assert data["layout"] == "pack" and "key dropping" in data["masking"]
    assert "unigram" in data["masking"]


def test_consistency_and_token_dropping_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cons"
    argv = ["run", "image-classification", "--data", "digits", "--masker", "drop"]
    argv += ["--masking", "none,static,consistency", "--rates", "0.25", "--fast", "--quiet"]
    argv += ["--consistency-weight", "0.5", "--out", str(out)]
    assert main(argv) == 0
    r = results(out)
    assert {run["variant"] for run in r["runs"]} == {"none", "static", "consistency"}
    assert r["settings"]["train"]["consistency_weight"] == 0.5
    assert r["settings"]["data"]["masker"] == "drop"


def test_drop_needs_the_vit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="needs model='vit'"):
        main(["run", "image-classification", "--masker", "drop", "--model", "cnn", "--fast"])


def test_patience_and_epochs_reach_the_training_config() -> None:
    from maskwise.cli import build_parser, configure
    from maskwise.experiments.registry import demo_task

    args = build_parser().parse_args(["demo", "--epochs", "40", "--patience", "5"])
    cfg = configure(demo_task(), args).train_config
    assert (cfg.epochs, cfg.patience) == (40, 5)


def test_controller_options_change_every_dynamic_arm() -> None:
    from maskwise.cli import build_parser, configure
    from maskwise.experiments.engine import Variant
    from maskwise.experiments.registry import demo_task

    argv = ["run", "image-classification", "--target", "0.2", "--max-rate", "0.3"]
    task = configure(demo_task(), build_parser().parse_args(argv))
    for name in (None, "hold", "seed", "accuracy"):
        cfg = Variant("dynamic", controller=name).controller_config(task)
        assert (cfg.target, cfg.max_rate) == (0.2, 0.3), name
    # The default arm keeps its own settings otherwise.
    cfg = Variant("dynamic").controller_config(task)
    assert (cfg.signal, cfg.start) == ("heldout_gap", "overfit")
    best = build_parser().parse_args(["run", "image-classification", "--target", "best"])
    assert best.target == "best"
