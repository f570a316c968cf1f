"""maskwise.experiments.data.files and .text: split files, every text classification format
written here and read back to the values written, bad files named in the error; split / carve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from maskwise.experiments import data as D
from tests.experiments.synth import (
    write_text,
)

# ----------------------------------------------------------------------------------------------
# Split files, text classification
# ----------------------------------------------------------------------------------------------


def test_find_split_files_reads_the_split_from_name_tokens(tmp_path: Path) -> None:
    for name in (
        "stsa.binary.train",
        "TREC.test.all",
        "my_valid.tsv",
        "README.md",
        "SOURCE.txt",
        ".train.swp",
        "notes.txt",
    ):
        write_text(tmp_path / name, "x\n")
    (tmp_path / "train_dir").mkdir()
    found = D.find_split_files(tmp_path)
    assert found == {
        "train": tmp_path / "stsa.binary.train",
        "test": tmp_path / "TREC.test.all",
        "dev": tmp_path / "my_valid.tsv",
    }
    assert D.find_split_files(tmp_path, suffixes=[".tsv", ".train"]) == {
        "train": tmp_path / "stsa.binary.train",
        "dev": tmp_path / "my_valid.tsv",
    }


@pytest.mark.parametrize("dev_name", ["dev.txt", "val.txt", "valid.txt", "sst.dev"])
def test_every_dev_file_name_is_the_dev_split(tmp_path: Path, dev_name: str) -> None:
    write_text(tmp_path / "train.txt", "a one\nb two\n")
    write_text(tmp_path / dev_name, "b three\n")
    write_text(tmp_path / "test.txt", "a four\n")
    splits, _ = D.load_text_classification(tmp_path)
    assert splits["dev"].inputs == ["three"]
    assert splits["train"].inputs == ["one", "two"]  # nothing carved when a dev file exists


def test_label_lines_values_and_sorted_label_ids(tmp_path: Path) -> None:
    # numeric labels sort as numbers ("2" < "10"), then the non-numeric ones as strings
    write_text(
        tmp_path / "train.txt", "10 ten apples\n2 two pears\n\nb  bee text\na DESC:manner how\n"
    )
    write_text(tmp_path / "dev.txt", "2 dev line\n")
    write_text(tmp_path / "test.txt", "10 test line\na another\n")
    splits, names = D.load_text_classification(tmp_path)
    assert names == ["2", "10", "a", "b"]
    assert splits["train"].inputs == ["ten apples", "two pears", " bee text", "DESC:manner how"]
    assert splits["train"].labels.tolist() == [1, 0, 3, 2]
    assert splits["dev"].labels.tolist() == [0]
    assert splits["test"].inputs == ["test line", "another"]
    assert splits["test"].labels.tolist() == [1, 2]
    assert splits["train"].labels.dtype == torch.long


def test_trec_style_fine_labels_are_label_tokens(tmp_path: Path) -> None:
    write_text(tmp_path / "x.train", "DESC:manner How did it go ?\nNUM:date When ?\n")
    write_text(tmp_path / "x.test", "NUM:date What year ?\n")
    write_text(tmp_path / "x.dev", "DESC:manner Why ?\n")
    _, names = D.load_text_classification(tmp_path)
    assert names == ["DESC:manner", "NUM:date"]


def test_tsv_csv_jsonl_and_gzip_variants(tmp_path: Path) -> None:
    write_text(
        tmp_path / "train.tsv", "id\tSentence\tLabel\n1\ta fine film\tpos\n2\ta bad film\tneg\n"
    )
    write_text(tmp_path / "dev.csv", 'text,label\n"good, really",pos\n')
    write_text(
        tmp_path / "test.jsonl.gz",
        json.dumps({"question": "so bad", "label": "neg", "id": 3})
        + "\n\n"
        + json.dumps({"question": "so good", "label": "pos", "id": 4})
        + "\n",
    )
    splits, names = D.load_text_classification(tmp_path)
    assert names == ["neg", "pos"]
    assert splits["train"].inputs == ["a fine film", "a bad film"]
    assert splits["train"].labels.tolist() == [1, 0]
    assert splits["dev"].inputs == ["good, really"]
    assert splits["test"].inputs == ["so bad", "so good"]
    assert splits["test"].labels.tolist() == [0, 1]


def test_jsonl_integer_labels_and_gzipped_label_lines(tmp_path: Path) -> None:
    write_text(
        tmp_path / "train.jsonl",
        "\n".join(json.dumps({"text": f"t{i}", "label": i % 3}) for i in range(9)),
    )
    write_text(tmp_path / "dev.txt.gz", "2 gz dev\n")
    write_text(tmp_path / "test.tsv.gz", "text\tlabel\ngz test\t1\n")
    splits, names = D.load_text_classification(tmp_path)
    assert names == ["0", "1", "2"]
    assert splits["train"].labels.tolist() == [0, 1, 2] * 3
    assert splits["dev"].inputs == ["gz dev"] and splits["dev"].labels.tolist() == [2]
    assert splits["test"].inputs == ["gz test"] and splits["test"].labels.tolist() == [1]


def test_missing_dev_is_carved_from_train_seeded(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(20)]
    write_text(tmp_path / "train.txt", "".join(f"{i % 2} {t}\n" for i, t in enumerate(texts)))
    write_text(tmp_path / "test.txt", "0 t\n1 u\n")
    a, _ = D.load_text_classification(tmp_path, seed=0)
    b, _ = D.load_text_classification(tmp_path, seed=0)
    c, _ = D.load_text_classification(tmp_path, seed=1)
    assert len(a["dev"]) == 2 and len(a["train"]) == 18  # round(0.1 * 20)
    assert a["dev"].inputs == b["dev"].inputs and a["train"].inputs == b["train"].inputs
    assert a["dev"].inputs != c["dev"].inputs
    assert sorted(a["train"].inputs + a["dev"].inputs) == sorted(texts)
    # labels travel with their texts
    for split in (a["train"], a["dev"]):
        for text, label in zip(split.inputs, split.labels.tolist()):
            assert label == int(text.split()[1]) % 2
    d, _ = D.load_text_classification(tmp_path, dev_fraction=0.25, seed=0)
    assert len(d["dev"]) == 5


def _three(tmp_path: Path, train: str = "a one\nb two\n", test: str = "a three\n") -> None:
    write_text(tmp_path / "train.txt", train)
    write_text(tmp_path / "test.txt", test)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"test.txt": "a x\n", "dev.txt": "a y\n"}, "no training file"),
        ({"train.txt": "a x\n", "dev.txt": "a y\n"}, "no test file"),
        (
            {"train.txt": "a x\n", "test.txt": "a x\n", "dev.txt": "a y\n", "val.txt": "a z\n"},
            "two files for the dev split: dev.txt, val.txt",
        ),
        (
            {"train.txt": "a one\nb\n", "test.txt": "a x\n"},
            "train.txt:2: expected '<label> <text>'",
        ),
        (
            {"train.txt": "a one\n(b) two\n", "test.txt": "a x\n"},
            "train.txt:2: expected '<label> <text>'",
        ),
        (
            {"train.txt": "a one\nb two\n", "test.txt": "a x\nc y\nd z\n"},
            "labels ['c', 'd'] never occur in train.txt",
        ),
        ({"train.txt": "\n\n", "test.txt": "a x\n"}, "train.txt: no examples"),
        (
            {"train.tsv": "text\tscore\nhi\t1\n", "test.txt": "a x\n"},
            "train.tsv: no label column/field "
            "(looked for label, labels, class, category, coarse_label; found text, score)",
        ),
        ({"train.csv": "label\n1\n", "test.txt": "a x\n"}, "train.csv: no text column/field"),
        ({"train.csv": "", "test.txt": "a x\n"}, "train.csv: empty file"),
        (
            {"train.csv": "text,label\nfine,1\nno label here\n", "test.txt": "1 x\n"},
            "train.csv:3: missing the label value",
        ),
        (
            {"train.jsonl": '{"text": "a", "label": 1}\n{"text": "b", \n', "test.txt": "1 x\n"},
            "train.jsonl:2: not JSON",
        ),
        (
            {"train.jsonl": '{"text": "a", "label": 1}\n{"text": "b"}\n', "test.txt": "1 x\n"},
            "train.jsonl:2: no field 'label' (fields: text)",
        ),
        (
            {"train.jsonl": '["a", 1]\n', "test.txt": "1 x\n"},
            "train.jsonl:1: expected a JSON object, got list",
        ),
    ],
)
def test_bad_text_classification_dirs(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write_text(tmp_path / name, text)
    with pytest.raises(ValueError, match="^" + re.escape(str(tmp_path))) as err:
        D.load_text_classification(tmp_path)
    assert message in str(err.value)


def test_unreadable_text_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "train.txt.gz").write_bytes(b"1 not gzip\n")
    write_text(tmp_path / "test.txt", "1 x\n")
    with pytest.raises(ValueError, match=r"train\.txt\.gz: unreadable"):
        D.load_text_classification(tmp_path)


def test_bytes_that_are_not_utf8_become_replacement_characters(tmp_path: Path) -> None:
    # TREC's training file has one stray 0xF0 byte; the rest of a file must still load
    (tmp_path / "train.txt").write_bytes("1 café\n".encode() + b"1 sister\xf0city\n")
    write_text(tmp_path / "test.txt", "1 x\n")
    write_text(tmp_path / "dev.txt", "1 y\n")
    splits, _ = D.load_text_classification(tmp_path)
    assert splits["train"].inputs == ["café", "sister\ufffdcity"]


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing is not a directory"):
        D.load_text_classification(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------
# Split and carve
# ----------------------------------------------------------------------------------------------


def test_carve_is_seeded_disjoint_and_covers_all() -> None:
    split = D.Split([f"x{i}" for i in range(20)], torch.arange(20) * 10)
    train, dev = D.carve(split, 0.25, seed=3)
    again = D.carve(split, 0.25, seed=3)
    other = D.carve(split, 0.25, seed=4)
    assert (len(train), len(dev)) == (15, 5)
    assert train.inputs == again[0].inputs and dev.inputs == again[1].inputs
    assert dev.inputs != other[1].inputs
    assert set(train.inputs).isdisjoint(dev.inputs)
    assert sorted(train.inputs + dev.inputs, key=lambda s: int(s[1:])) == split.inputs
    for part in (train, dev):  # kept in the original order, labels with their inputs
        idx = [int(s[1:]) for s in part.inputs]
        assert idx == sorted(idx)
        assert part.labels.tolist() == [10 * i for i in idx]


def test_carve_tensor_inputs_and_bounds() -> None:
    split = D.Split(torch.arange(10).view(10, 1), torch.arange(10))
    train, dev = D.carve(split, 0.01, seed=0)
    assert len(dev) == 1  # at least one
    assert torch.equal(dev.inputs.view(-1), dev.labels)
    assert torch.equal(train.inputs.view(-1), train.labels)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match=rf"fraction must be in \(0, 1\) \({bad} given\)"):
            D.carve(split, bad, seed=0)


# ----------------------------------------------------------------------------------------------
# The real data sets (skipped without ../shared/data)
# ----------------------------------------------------------------------------------------------


def test_real_sst2(sst2_dir: Path) -> None:
    splits, names = D.load_text_classification(sst2_dir)
    assert names == ["0", "1"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 6920, "dev": 872, "test": 1821}


def test_real_trec_dev_carved(trec_dir: Path) -> None:
    splits, names = D.load_text_classification(trec_dir)
    assert names == ["0", "1", "2", "3", "4", "5"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 5452 - 545, "dev": 545, "test": 500}
