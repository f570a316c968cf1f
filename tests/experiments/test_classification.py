"""The classification tasks end to end for a few steps: on synthetic files in every accepted
format and on small slices of ../shared/data copied to a temporary directory (skipped without
it); plus the pixel-space patch masker."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from maskwise.experiments import data as D
from maskwise.experiments.data import audio
from maskwise.experiments.engine import RunResult, TrainConfig, Variant, train_run
from maskwise.experiments.tasks.image import ImageClassification, ImagePatchMask
from maskwise.experiments.tasks.speech import SpeechClassification
from maskwise.experiments.tasks.text import TextClassification, trim_padding
from maskwise.experiments.tokenizers import PAD, WORDPIECE_SPECIALS
from maskwise.nn import DynamicMask, SpecAugment
from tests.experiments.synth import (
    sine,
    write_idx_dir,
    write_speech_dir,
    write_text,
    write_text_dir,
    write_wav,
)

FEW = TrainConfig(epochs=1, max_steps=3)


def check_run(r: RunResult, task: Any, variant: Variant) -> None:
    """A short run's result: one epoch of at most 3 steps, metrics of every split in range."""
    steps = min(
        3, math.ceil(len(task.splits["train"]) / task.classifier.batch_size)
    )  # batches of 32
    assert (r.steps, r.epochs, r.best_epoch) == (steps, 1, 1)
    assert r.variant == variant.kind
    for split in (r.train, r.dev, r.test):
        assert set(split) >= {"accuracy", "loss"}
        assert 0.0 <= split["accuracy"] <= 1.0 and split["loss"] > 0
    assert r.gap == pytest.approx(r.train["accuracy"] - r.test["accuracy"])
    assert set(r.history[0]) >= {"epoch", "step", "train_loss", "dev_accuracy", "dev_loss"}
    if variant.kind == "none":
        assert r.monitor is None
    else:
        assert r.monitor is not None
        forwards = [
            row for row in r.monitor.rows if "accuracy" not in row
        ]  # observe rows carry reliability
        assert len(forwards) == r.steps and all("rate" in row for row in forwards)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masker", ["patch", "block", "erase"])
def test_image_digits(masker: str) -> None:
    task = ImageClassification("digits", train_size=64, masker=masker)
    # 1,797 digits: test round(0.25 * 1797), dev round(0.2 * the rest), train subsampled
    assert task.describe()["sizes"] == {"train": 64, "dev": 270, "test": 449}
    assert task.classes == [str(i) for i in range(10)]
    x = task.splits["train"].inputs
    assert x.shape == (64, 1, 8, 8)
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5) and float(x.std()) == pytest.approx(
        1.0, abs=1e-5
    )
    variant = Variant("static", 0.25 if masker != "erase" else 0.5)
    r = train_run(task, variant, 0, config=FEW)
    check_run(r, task, variant)
    if masker == "patch":  # exactly round(0.25 * 16) of the 4 x 4 grid of 2 x 2 patches
        assert [row["masked_fraction"] for row in r.monitor.rows if "masked_fraction" in row] == [
            0.25
        ] * r.steps


def test_image_idx_dir(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, n_train=60, n_test=20, size=16, classes=3, gz=True)
    task = ImageClassification(tmp_path, masker="block")
    # the official test set; dev carved from train (at most half of it)
    assert task.describe()["sizes"] == {"train": 30, "dev": 30, "test": 20}
    assert task.classes == ["0", "1", "2"] and task.patch_size == 4
    for variant in (Variant("none"), Variant("dynamic")):
        check_run(train_run(task, variant, 0, config=FEW), task, variant)


def test_image_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"masker must be one of \('patch', 'block', 'erase', 'drop'\) \('cutout' given\)",
    ):
        ImageClassification("digits", masker="cutout")
    with pytest.raises(ValueError, match=r"train_size must be in \[1, 1078\] \(5000 given\)"):
        ImageClassification("digits", train_size=5000)
    with pytest.raises(ValueError, match="is not a directory"):
        ImageClassification(tmp_path / "missing")


def test_image_patch_mask() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    pm = ImagePatchMask(0.25, 2, value=-1.0, seed=0)
    out, mask = pm(images)
    assert mask.shape == (2, 16) and mask.sum(1).tolist() == [4, 4]
    # expand the (B, 16) patch mask to pixels by a loop: patch n covers rows 2(n // 4) .. +1,
    # columns 2(n % 4) .. +1
    pix = torch.zeros(2, 3, 8, 8, dtype=torch.bool)
    for b in range(2):
        for n in range(16):
            if mask[b, n]:
                r, c = 2 * (n // 4), 2 * (n % 4)
                pix[b, :, r : r + 2, c : c + 2] = True
    assert torch.equal(out, torch.where(pix, torch.tensor(-1.0), images))
    pm.eval()
    same, none = pm(images)
    assert same is images and not none.any()


def test_image_patch_mask_blocks() -> None:
    images = torch.randn(4, 1, 16, 16)
    pm = ImagePatchMask(0.25, 2, value=9.0, blocks=True, seed=0)
    out, mask = pm(images)
    assert mask.shape == (4, 64) and mask.sum(1).tolist() == [16] * 4  # exactly round(0.25 * 64)
    pix = mask.view(4, 8, 8).repeat_interleave(2, 1).repeat_interleave(2, 2).unsqueeze(1)
    assert torch.equal(out, torch.where(pix, torch.tensor(9.0), images))


# ----------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------


def _small_text(root: Path) -> TextClassification:
    return TextClassification(root, vocab_size=200, max_len=16, dim=16, layers=1)


def test_text_synthetic_dir(tmp_path: Path) -> None:
    write_text_dir(tmp_path, n_train=40, n_dev=12, n_test=12)
    task = _small_text(tmp_path)
    assert task.classes == ["neg", "pos"]
    assert task.describe()["sizes"] == {"train": 40, "dev": 12, "test": 12}
    ids = task.splits["train"].inputs
    assert ids.shape == (40, 16) and ids.dtype == torch.long
    assert (ids[:, 0] != PAD).all()  # every example has tokens; padding only at the end
    batch, _ = task.classifier.fetch("train", torch.arange(8))  # cut to its longest example
    assert torch.equal(batch, trim_padding(ids[:8])) and (batch[:, -1] != PAD).any()
    for variant in (Variant("static", 0.3), Variant("dynamic")):
        check_run(train_run(task, variant, 0, config=FEW), task, variant)


def test_text_masking_spares_padding_and_special_tokens(tmp_path: Path) -> None:
    write_text_dir(tmp_path, n_train=20, n_dev=4, n_test=4)
    task = _small_text(tmp_path)
    ids, _ = task.classifier.fetch("train", torch.arange(8))
    ids = ids.clone()
    ids[0, 0] = WORDPIECE_SPECIALS.index("[CLS]")
    masked = task.masking.apply(DynamicMask(task.make_masker(1.0, 0), 1.0), ids)
    keep = ids < len(WORDPIECE_SPECIALS)  # padding and special tokens
    assert torch.equal(masked[keep], ids[keep])
    assert (masked[~keep] == task.masking.mask_id).all()


def test_text_tracker_keys_are_the_unmasked_tokens(tmp_path: Path) -> None:
    from maskwise.dynamic import DifficultyTracker

    write_text_dir(tmp_path, n_train=20, n_dev=4, n_test=4)
    task = _small_text(tmp_path)
    ids, y = task.classifier.fetch("train", torch.arange(8))
    dm = DynamicMask(
        task.make_masker(1.0, 0), 1.0, tracker=DifficultyTracker(task.num_keys())
    ).train()
    out = task.train_step(task.build_model(), dm, (ids, y), torch.device("cpu"))
    assert torch.equal(out.keys, ids)  # not the [MASK]-filled input the model saw
    assert torch.equal(out.key_valid, ids >= len(WORDPIECE_SPECIALS))
    no_tracker = task.train_step(
        task.build_model(),
        DynamicMask(task.make_masker(1.0, 0), 1.0),
        (ids, y),
        torch.device("cpu"),
    )
    assert no_tracker.keys is None


def test_text_per_example_masker_keys_the_tracker_by_example(tmp_path: Path) -> None:
    from maskwise.dynamic import DifficultyTracker

    write_text_dir(tmp_path, n_train=20, n_dev=4, n_test=4)
    task = _small_text(tmp_path)
    assert task.num_examples() == 20
    batch = next(iter(task.train_batches(0, torch.Generator().manual_seed(0))))
    ids, y, idx = batch
    assert torch.equal(ids, task.classifier.fetch("train", idx)[0])
    tracker = DifficultyTracker(20, momentum=0.0)
    # every example memorised (loss 0) but the batch's first, which is hard (loss 5)
    tracker.update(torch.arange(20), torch.where(torch.arange(20) == idx[0], 5.0, 0.0))
    dm = DynamicMask(
        task.make_masker(0.5, 0), 0.5, tracker=tracker, temperature=-1.0, per_sample=True
    ).train()
    out = task.train_step(task.build_model(), dm, batch, torch.device("cpu"))
    assert torch.equal(out.keys, idx) and out.key_valid is None  # keyed by example
    rates = dm._sample_rates(0.5, idx)
    assert float(rates[0]) < 0.05 and bool((rates[1:] > 0.5).all())  # the hard one spared
    # Through the engine, by name.
    v = Variant("dynamic", controller="examples")
    check_run(train_run(task, v, 0, config=TrainConfig(epochs=1)), task, v)
    # Tasks without example keys say so.
    with pytest.raises(ValueError, match="per-example masking needs a task with example keys"):
        train_run(ImageClassification("digits", train_size=40), v, 0, config=FEW)


@pytest.mark.parametrize("name", ["trec", "sst2"])
def test_text_real_slice(tmp_path: Path, request: pytest.FixtureRequest, name: str) -> None:
    src = request.getfixturevalue(f"{name}_dir")
    files = D.find_split_files(src)
    for path in files.values():  # the first 200 lines of each split
        with open(path, "rb") as f:
            head = b"".join(line for _, line in zip(range(200), f))
        (tmp_path / path.name).write_bytes(head)
    task = _small_text(tmp_path)
    sizes = task.describe()["sizes"]
    if name == "trec":  # no dev file: 10 % of train carved
        assert sizes == {"train": 180, "dev": 20, "test": 200} and task.classes == [
            str(i) for i in range(6)
        ]
    else:
        assert sizes == {"train": 200, "dev": 200, "test": 200} and task.classes == ["0", "1"]
    check_run(train_run(task, Variant("static", 0.2), 0, config=FEW), task, Variant("static", 0.2))


def test_text_train_size_and_drop_masker(tmp_path: Path) -> None:
    from maskwise.experiments.tasks.text import drop_tokens_from_attention

    write_text_dir(tmp_path, n_train=40, n_dev=12, n_test=12)
    task = TextClassification(
        tmp_path, train_size=10, masker="drop", vocab_size=200, max_len=16, dim=16, layers=1
    )
    assert task.describe()["sizes"] == {"train": 10, "dev": 12, "test": 12}
    assert task.describe()["masker"] == "drop"
    with pytest.raises(ValueError, match="train_size must be in"):
        TextClassification(tmp_path, train_size=41, vocab_size=200)
    with pytest.raises(ValueError, match="masker must be one of"):
        TextClassification(tmp_path, masker="blank", vocab_size=200)

    ids = task.splits["train"].tensor[:, :12].clone()
    masker = DynamicMask(task.make_masker(0.5, seed=0), 0.5)
    dropped = drop_tokens_from_attention(masker, ids)
    real = ids != PAD
    gone = real & (dropped == PAD)
    assert torch.equal(dropped[~gone], ids[~gone])  # the rest untouched, in place
    assert ((dropped != PAD).sum(1) >= 1).all()  # every row keeps a token
    twin = DynamicMask(task.make_masker(0.5, seed=0), 0.5)  # the same draw
    picked = twin(ids, attention_mask=real)[1] & real
    emptied = ~(real & ~picked).any(1)
    assert torch.equal(gone[~emptied], picked[~emptied])  # exactly the masker's picks
    assert 0 < int(gone.sum()) < int(real.sum())
    # dropped tokens are invisible: whatever id they held, the logits are the same
    model = task.build_model().eval()
    other = torch.where(gone, torch.full_like(ids, 7), ids)
    with torch.no_grad():
        a = task.forward(model, dropped)
        b = model(other, real & ~gone)
    assert torch.allclose(a, b, atol=1e-5)
    check_run(train_run(task, Variant("static", 0.3), 0, config=FEW), task, Variant("static", 0.3))


def test_text_dan_model_is_a_mean_of_the_kept_embeddings(tmp_path: Path) -> None:
    from maskwise.experiments.models import DANClassifier

    write_text_dir(tmp_path, n_train=40, n_dev=12, n_test=12)
    task = TextClassification(
        tmp_path, model="dan", masker="drop", vocab_size=200, max_len=16, dim=16, layers=2
    )
    assert task.describe()["model"] == "dan d=16 x2"
    model = task.build_model().eval()
    assert isinstance(model, DANClassifier)
    with pytest.raises(ValueError, match="model must be one of"):
        TextClassification(tmp_path, model="lstm", vocab_size=200)
    ids = torch.tensor([[5, 6, 7, 0], [9, 0, 0, 0]])
    keep = ids != PAD
    with torch.no_grad():
        logits = task.forward(model, ids)
        # the naive reference: the mean of each row's real embeddings through the layers
        means = torch.stack(
            [model.tok.weight[row[k]].mean(0) for row, k in zip(ids, keep, strict=True)]
        )
        assert torch.allclose(logits, model.head(model.hidden(means)), atol=1e-6)
        # a bag of words: order and padding do not matter, what is dropped does not count
        assert torch.allclose(task.forward(model, torch.tensor([[7, 5, 6, 0]]))[0], logits[0])
        assert torch.allclose(model(torch.tensor([[9, 3, 3, 3]]), keep[1:]), logits[1:])
    check_run(train_run(task, Variant("static", 0.3), 0, config=FEW), task, Variant("static", 0.3))


# ----------------------------------------------------------------------------------------------
# Speech
# ----------------------------------------------------------------------------------------------


def _small_speech(root: Path, split: str = "official") -> SpeechClassification:
    return SpeechClassification(
        root, split=split, n_mels=20, frames=16, width=8, freq_width=3, time_width=2
    )


def test_speech_synthetic_dir_and_feature_cache(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_speech_dir(
        tmp_path / "wav", labels=("0", "1", "2"), speakers=("ann", "bob"), indices=range(8)
    )
    task = _small_speech(tmp_path / "wav")
    # index 0-4 test (3 x 2 x 5 = 30), 5-7 train (18), of which round(0.1 * 18) = 2 dev
    assert task.describe()["sizes"] == {"train": 16, "dev": 2, "test": 30}
    assert task.splits["train"].inputs.shape == (16, 20, 16)
    assert torch.isfinite(task.splits["test"].inputs).all()
    cached = sorted(cache_dir.glob("logmel-*.pt"))
    assert len(cached) == 2  # one file per split
    check_run(train_run(task, Variant("static", 0.5), 0, config=FEW), task, Variant("static", 0.5))

    def no_reading(path: object) -> None:
        raise AssertionError(f"read {path} although its features are cached")

    monkeypatch.setattr(audio, "read_wav", no_reading)
    again = _small_speech(tmp_path / "wav")
    assert torch.equal(again.splits["test"].inputs, task.splits["test"].inputs)
    assert torch.equal(again.splits["train"].inputs, task.splits["train"].inputs)


def test_speech_manifest_without_split(tmp_path: Path, cache_dir: Path) -> None:
    paths = write_speech_dir(
        tmp_path / "wav", labels=("no", "yes"), speakers=("a",), indices=range(10), n=800
    )
    write_text(
        tmp_path / "all.csv",
        "path,label\n" + "".join(f"wav/{p.name},{p.name.split('_')[0]}\n" for p in paths),
    )
    task = _small_speech(tmp_path / "all.csv")
    # 20 clips: test round(0.1 * 20) = 2, then dev round(0.1 * 18) = 2
    assert task.describe()["sizes"] == {"train": 16, "test": 2, "dev": 2}
    assert task.classes == ["no", "yes"]
    check_run(train_run(task, Variant("dynamic"), 0, config=FEW), task, Variant("dynamic"))


def test_speech_real_fsdd_slice(tmp_path: Path, fsdd_dir: Path, cache_dir: Path) -> None:
    for digit in range(4):  # 4 digits x indices 0-9 of one speaker: 20 test, 20 train clips
        for i in range(10):
            name = f"{digit}_george_{i}.wav"
            shutil.copyfile(fsdd_dir / "recordings" / name, tmp_path / name)
    task = SpeechClassification(tmp_path, split="official", width=8)
    assert task.classes == ["0", "1", "2", "3"]
    assert task.describe()["sizes"] == {"train": 18, "dev": 2, "test": 20}
    assert task.splits["train"].inputs.shape == (18, 40, 80)
    check_run(train_run(task, Variant("static", 0.5), 0, config=FEW), task, Variant("static", 0.5))


def test_speech_monitor_records_the_masked_fraction(tmp_path: Path, cache_dir: Path) -> None:
    write_speech_dir(tmp_path, labels=("0", "1"), speakers=("a",), indices=range(8), n=800)
    task = _small_speech(tmp_path)
    r = train_run(task, Variant("static", 0.5), 0, config=FEW)
    assert all("masked_fraction" in row for row in r.monitor.rows)


def test_speech_speaker_split_follows_the_seed(tmp_path: Path, cache_dir: Path) -> None:
    write_speech_dir(
        tmp_path, labels=("0", "1"), speakers=("cy", "ann", "bob"), indices=range(3), n=800
    )
    task = _small_speech(tmp_path, split="speakers")
    assert task.speakers == ["ann", "bob", "cy"] and task.dev_speaker == "cy"
    # seed s: test speaker s % 2 of ann, bob; dev always cy; train the third
    model = task.build_model().eval()
    items = [task.for_seed(s).item_scores(model, "test", torch.device("cpu")) for s in (0, 1, 2)]
    assert items[0]["items"] != items[1]["items"]  # another speaker: other test items
    assert items[0]["items"] == items[2]["items"]  # the same speaker: the same items
    for seed, test in enumerate(["ann", "bob", "ann", "bob"]):
        fold = task.for_seed(seed)
        assert fold.held_out() == {"dev": "cy", "test": test}
        assert fold.describe()["sizes"] == {"train": 6, "dev": 6, "test": 6}
        # the speakers of each split, read from the clips themselves
        spk = {k: speakers_of(task, v) for k, v in fold.splits.items()}
        assert spk == {"train": {"ann", "bob"} - {test}, "dev": {"cy"}, "test": {test}}
    assert task.for_seed(0) is task  # built on seed 0's fold
    assert torch.equal(task.for_seed(2).splits["test"].inputs, task.splits["test"].inputs)
    assert task.splits["test"].inputs.shape == (6, 20, 16)  # not changed by other folds
    other = SpeechClassification(
        tmp_path,
        split="speakers",
        n_mels=20,
        frames=16,
        width=8,
        freq_width=3,
        time_width=2,
        dev_speaker="ann",
    )
    assert [other.for_seed(s).held_out()["test"] for s in range(3)] == ["bob", "cy", "bob"]
    with pytest.raises(ValueError, match="not among the speakers"):
        SpeechClassification(tmp_path, split="speakers", n_mels=20, frames=16, dev_speaker="x")

    # the engine trains each seed on its own fold: the same seed gives the same run
    seen = []
    original = SpeechClassification.for_seed

    def spy(self: SpeechClassification, seed: int) -> SpeechClassification:
        out = original(self, seed)
        seen.append(out.held_out()["test"])
        return out

    import maskwise.experiments.tasks.speech as speech_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speech_module.SpeechClassification, "for_seed", spy)
        r = train_run(task, Variant("static", 0.5), 1, config=FEW)
    assert seen == ["bob"] and r.seed == 1


def speakers_of(task: SpeechClassification, split: D.Split) -> set[str]:
    """The speakers whose clips are in ``split`` (matched to the pooled clips by content)."""
    pooled = task.all.tensor.flatten(1)
    out = set()
    for x in split.tensor.flatten(1):
        i = int((pooled == x).all(1).nonzero()[0])
        out.add(task.speakers[int(task.speaker_ids[i])])
    return out


def test_speech_speaker_split_needs_speakers(tmp_path: Path, cache_dir: Path) -> None:
    paths = write_speech_dir(
        tmp_path / "wav", labels=("no", "yes"), speakers=("a", "b"), indices=range(2), n=800
    )
    with pytest.raises(ValueError, match="at least 3 speakers"):
        _small_speech(tmp_path / "wav", split="speakers")
    write_text(tmp_path / "all.csv", "".join(f"wav/{p.name},x\n" for p in paths))
    with pytest.raises(ValueError, match="names no speakers"):
        _small_speech(tmp_path / "all.csv", split="speakers")
    with pytest.raises(ValueError, match="split must be one of"):
        _small_speech(tmp_path / "wav", split="random")


def test_frame_lengths_inverts_the_padding(tmp_path: Path, cache_dir: Path) -> None:
    from maskwise.experiments.data import frame_lengths

    # clips of 400, 800 and 1,600 samples at 8 kHz: 10 ms hops give about 6, 11 and 21 frames
    paths = [
        write_wav(tmp_path / f"0_a_{i}.wav", [[s] for s in sine(440 * (i + 1), n)])
        for i, n in enumerate((400, 800, 1600))
    ]
    split = D.speech_features([(p, "0") for p in paths], {"0": 0}, n_mels=20, frames=16)
    lengths = frame_lengths(split.tensor)
    for p, n in zip(paths, lengths.tolist()):
        wav, sr = D.read_wav(p)
        full = D.log_mel(wav, sr, n_mels=20).shape[1]
        assert n == min(full, 16)  # the real frames, capped by the window
    assert lengths[2] == 16


def test_speech_time_masks_stay_within_the_clip(tmp_path: Path) -> None:
    from maskwise.experiments.tasks.speech import _spec_augment, _time_width

    x = torch.randn(64, 20, 30)
    x[:, :, 12:] = x.amin(dim=(1, 2), keepdim=True)  # every clip: 12 real frames, then padding
    masker = DynamicMask(
        SpecAugment(1.0, freq_masks=0, freq_width=0, time_masks=2, time_width=0.25, seed=0), 1.0
    )
    out = _spec_augment(masker, x)
    changed = (out != x).any(1)  # (B, T) frames touched
    assert not changed[:, 12:].any()  # never the padding
    assert changed[:, :12].any()
    # two masks of at most floor(0.25 * 12) = 3 frames each: at most 6 of the 12 frames
    assert int(changed.sum(1).max()) <= 6
    assert _time_width("0.1") == 0.1 and _time_width("8") == 8
    with pytest.raises(ValueError):
        _time_width("1.5")


def test_image_per_sample_rates_spread_around_the_rate() -> None:
    images = torch.zeros(2000, 1, 8, 8)
    m = ImagePatchMask(0.25, 2, value=1.0, per_sample=True, seed=0).train()
    _, mask = m(images)
    share = mask.float().mean(1)  # (B,) per image, 16 patches each
    # rates uniform in [0, 0.5]: k = round(rate * 16) in 0..8, the mean near 0.25 * 16 = 4
    assert share.max() <= 0.5 and share.min() == 0.0
    assert abs(float(share.mean()) - 0.25) < 0.01  # SE of the mean ~0.0033
    assert len(set(share.tolist())) == 9  # every count 0..8 occurs
    high = ImagePatchMask(0.75, 2, per_sample=True, seed=0).train()(images)[1].float().mean(1)
    assert high.min() >= 0.5 and high.max() == 1.0  # [0.5, 1]: centred on 0.75
    assert abs(float(high.mean()) - 0.75) < 0.01
    fixed = ImagePatchMask(0.25, 2, seed=0).train()(images)[1].float().mean(1)
    assert set(fixed.tolist()) == {0.25}
    with pytest.raises(ValueError, match="random patches"):
        ImagePatchMask(0.25, 2, blocks=True, per_sample=True)
    with pytest.raises(ValueError, match="need masker='patch'"):
        ImageClassification("digits", masker="drop", per_sample=True)
    task = ImageClassification("digits", train_size=64, per_sample=True)
    assert task.describe()["masker"] == "patch (per-sample rates)"
    check_run(
        train_run(task, Variant("static", 0.25), 0, config=FEW), task, Variant("static", 0.25)
    )
