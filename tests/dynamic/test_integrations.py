"""The Hugging Face and Lightning integrations, trained for a few steps on synthetic tokens with
tiny models built here (no downloads): collator epoch / step, controller updates, monitor rows,
the logged rate."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from maskwise.collators import IndexedDataset, MLMCollator
from maskwise.dynamic import DifficultyTracker, ReliabilityController
from maskwise.monitor import MaskMonitor

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = (PAD, CLS, SEP, MASK)
VOCAB = 100
STEPS = 6


def token_lists(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(10, 24, (), generator=g))
        out.append([CLS, *torch.randint(4, VOCAB, (length,), generator=g).tolist(), SEP])
    return out


def controller(**kwargs: Any) -> ReliabilityController:
    """Rate 0.15 with the seed rule (unreliable -> more masking) in [0, 0.9]: an untrained model
    raises the rate by max_delta every update, whatever the library's defaults."""
    return ReliabilityController(0.15, direction="seed", min_rate=0.0, max_rate=0.9, **kwargs)


def collator(rate: Any) -> MLMCollator:
    return MLMCollator(
        mask_id=MASK, pad_id=PAD, vocab_size=VOCAB, special_ids=SPECIAL, rate=rate, seed=0
    )


# --------------------------------------------------------------------------------------------
# Hugging Face


def tiny_bert() -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
    )
    return transformers.BertForMaskedLM(config)


def training_args(tmp_path: Path, **kwargs: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    kwargs.setdefault("max_steps", STEPS)
    return transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=True,
        remove_unused_columns=False,
        learning_rate=1e-3,
        seed=0,
        **kwargs,
    )


def recorder() -> Any:
    """A callback that keeps the logs it is shown (it runs after MaskwiseCallback)."""
    transformers = pytest.importorskip("transformers")

    class Recorder(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.logs: list[dict[str, Any]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            self.logs.append(dict(logs or {}))

    return Recorder()


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MaskwiseTrainer + MaskwiseCallback for STEPS steps, with a controller, tracker, monitor."""
    pytest.importorskip("transformers")
    from maskwise.integrations.hf import MaskwiseCallback, MaskwiseTrainer

    c = controller(signal="accuracy", target=0.5, gain=0.5, momentum=0.5, max_delta=0.05)
    coll = collator(c)
    tracker = DifficultyTracker(VOCAB, momentum=0.5)
    mon = MaskMonitor(num_classes=VOCAB)
    rec = recorder()
    trainer = MaskwiseTrainer(
        model=tiny_bert(),
        args=training_args(tmp_path_factory.mktemp("hf"), num_train_epochs=1),
        train_dataset=IndexedDataset(token_lists(24)),
        data_collator=coll,
        controller=c,
        tracker=tracker,
        monitor=mon,
        callbacks=[MaskwiseCallback(coll), rec],
    )
    result = trainer.train()
    return {
        "result": result,
        "controller": c,
        "collator": coll,
        "tracker": tracker,
        "monitor": mon,
        "logs": rec.logs,
    }


@pytest.mark.hf
@pytest.mark.slow
def test_hf_maskwise_trainer_feeds_the_controller_every_step(hf_run: dict[str, Any]) -> None:
    result, c, coll = hf_run["result"], hf_run["controller"], hf_run["collator"]
    tracker, mon = hf_run["tracker"], hf_run["monitor"]
    assert result.global_step == STEPS
    assert math.isfinite(result.training_loss)
    # One controller update per training step, from that step's logits (no extra forward).
    assert c.updates == STEPS
    # An untrained model is far below accuracy 0.5: the seed rule raised the rate each step.
    assert c.rate == pytest.approx(0.15 + 0.05 * STEPS)
    assert coll.rate == c.rate
    # The tracker saw the masked tokens, keyed by their (original) ids.
    assert tracker.count.sum() > 0 and tracker.count[list(SPECIAL)].sum() == 0
    assert len(mon.rows) == STEPS and all("accuracy" in r for r in mon.rows)
    assert [r["rate"] for r in mon.rows] == pytest.approx(
        [0.15 + 0.05 * s for s in range(1, STEPS + 1)]
    )
    # The callback kept the collator in step: 24 examples / 8 = 3 steps per epoch.
    assert coll.step == STEPS and coll.epoch == 1
    # maskwise_rate was added to the logs of every step.
    step_logs = [log for log in hf_run["logs"] if "loss" in log]
    assert len(step_logs) == STEPS
    assert all("maskwise_rate" in log for log in step_logs)
    assert [log["maskwise_rate"] for log in step_logs] == pytest.approx(
        [r["rate"] for r in mon.rows]
    )


@pytest.mark.hf
def test_hf_maskwise_trainer_monitor_counts_classes(hf_run: dict[str, Any]) -> None:
    mon = hf_run["monitor"]
    assert mon.class_seen.sum() > 0 and mon.class_masked.sum() > 0
    assert all("masked_fraction" in r for r in mon.rows)


@pytest.mark.hf
def test_hf_maskwise_rate_is_in_the_log_history(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from maskwise.integrations.hf import MaskwiseCallback, MaskwiseTrainer

    c = controller(target=0.5)
    coll = collator(c)
    trainer = MaskwiseTrainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=2),
        train_dataset=token_lists(16),
        data_collator=coll,
        controller=c,
        callbacks=[MaskwiseCallback(coll)],
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all("maskwise_rate" in h for h in logged)


@pytest.mark.hf
def test_hf_callback_feeds_a_loss_controller_and_a_monitor(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from maskwise.integrations.hf import MaskwiseCallback

    # Untrained loss ~ log(100) = 4.6, above the target: the seed rule masks more.
    c = controller(signal="loss", target=2.0, gain=0.1, momentum=0.0, max_delta=0.02)
    coll = collator(c)
    mon = MaskMonitor()
    rec = recorder()
    trainer = transformers.Trainer(
        model=tiny_bert(),
        args=training_args(tmp_path),
        train_dataset=token_lists(48),
        data_collator=coll,
        callbacks=[MaskwiseCallback(coll, controller=c, monitor=mon), rec],
    )
    trainer.train()
    logs = [log for log in rec.logs if "loss" in log]
    assert len(logs) == STEPS
    assert c.updates == STEPS  # one per logged loss
    assert c.rate == pytest.approx(0.15 + 0.02 * STEPS)
    assert [r["step"] for r in mon.rows] == [float(s) for s in range(1, STEPS + 1)]
    assert [r["loss"] for r in mon.rows] == pytest.approx([log["loss"] for log in logs])
    assert all(0.15 < r["rate"] <= 0.15 + 0.02 * STEPS + 1e-9 for r in mon.rows)
    assert coll.step == STEPS and coll.epoch == 0


def heldout_controller() -> ReliabilityController:
    """MLM has targets only where it masks: the rate stays >= 0.1."""
    return ReliabilityController(
        0.15, signal="heldout_gap", min_rate=0.1, max_rate=0.9, gain=0.1, momentum=0.0
    )


@pytest.mark.hf
def test_hf_callback_feeds_a_heldout_gap_controller_from_the_evaluations(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from maskwise.integrations.hf import MaskwiseCallback

    c = heldout_controller()
    coll = collator(c)
    rec = recorder()
    trainer = transformers.Trainer(
        model=tiny_bert(),
        args=training_args(tmp_path, eval_strategy="steps", eval_steps=2),
        train_dataset=token_lists(48),
        eval_dataset=token_lists(16, seed=1),
        data_collator=coll,
        callbacks=[MaskwiseCallback(coll, controller=c), rec],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "heldout_gap" in str(w.message)]
    evals = [log["eval_loss"] for log in rec.logs if "eval_loss" in log]
    assert len(evals) == STEPS // 2
    assert c.reference == pytest.approx(evals[-1])  # the latest evaluation's loss
    # Trainer logs a step's loss before it evaluates: steps 1-2 have no reference yet.
    assert c.updates == STEPS - 2
    # Without evaluations the reference never comes: say so.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c2 = heldout_controller()
        transformers.Trainer(
            model=tiny_bert(),
            args=training_args(tmp_path, max_steps=1),
            train_dataset=token_lists(8),
            data_collator=collator(c2),
            callbacks=[MaskwiseCallback(collator(c2), controller=c2)],
        ).train()
    assert len([w for w in caught if "never evaluates" in str(w.message)]) == 1
    assert c2.updates == 0


# --------------------------------------------------------------------------------------------
# Lightning


def lightning_module(return_logits: bool) -> Any:
    L = pytest.importorskip("lightning")

    class TinyMLM(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.embed = nn.Embedding(VOCAB, 16)
            self.head = nn.Linear(16, VOCAB)

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> Any:
            logits = self.head(self.embed(batch["input_ids"]))  # (B, L, V)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB), batch["labels"].reshape(-1)
            )
            if return_logits:
                return {"loss": loss, "logits": logits.detach(), "labels": batch["labels"]}
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return TinyMLM()


def run_lightning(
    controller: ReliabilityController, return_logits: bool
) -> tuple[Any, MLMCollator, MaskMonitor, list[tuple[int, int]]]:
    L = pytest.importorskip("lightning")
    from maskwise.integrations.lightning import MaskwiseLightningCallback

    coll = collator(controller)
    seen: list[tuple[int, int]] = []  # (epoch, step) each batch was collated at

    def spy(examples: list[Any]) -> dict[str, torch.Tensor]:
        seen.append((coll.epoch, coll.step))
        return coll(examples)

    loader = DataLoader(token_lists(16), batch_size=8, collate_fn=spy)  # 2 batches per epoch
    mon = MaskMonitor()
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=5,
        callbacks=[MaskwiseLightningCallback(coll, controller=controller, monitor=mon)],
    )
    trainer.fit(lightning_module(return_logits), loader)
    return trainer, coll, mon, seen


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_callback_with_a_loss_signal() -> None:
    c = controller(signal="loss", target=2.0, gain=0.1, momentum=0.0, max_delta=0.02)
    trainer, coll, mon, seen = run_lightning(c, return_logits=False)
    assert trainer.global_step == 5
    # Epochs 0, 1, 2 (2 batches each); the step the callback set after each batch.
    assert seen == [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4)]
    assert coll.epoch == 2 and coll.step == 5
    assert c.updates == 5 and c.rate == pytest.approx(0.15 + 0.02 * 5)  # loss ~4.6 > 2
    assert len(mon.rows) == 5
    assert [r["step"] for r in mon.rows] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(math.isfinite(r["loss"]) for r in mon.rows)
    assert float(trainer.callback_metrics["maskwise_rate"]) == pytest.approx(c.rate)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_callback_with_logits_and_labels() -> None:
    c = controller(signal="accuracy", target=0.5, gain=0.5, momentum=0.0, max_delta=0.03)
    trainer, coll, mon, seen = run_lightning(c, return_logits=True)
    assert c.updates == 5
    assert c.rate == pytest.approx(0.15 + 0.03 * 5)  # untrained: accuracy << 0.5, more masking
    assert len(mon.rows) == 5
    assert all("accuracy" in r and 0.0 <= r["accuracy"] <= 1.0 for r in mon.rows)
    assert coll.step == 5 and coll.epoch == 2


def test_lightning_warns_once_when_the_controller_gets_nothing() -> None:
    """An accuracy controller with a training_step that returns only the loss never moves:
    say so, once."""
    c = controller(signal="accuracy", target=0.5, gain=0.5, momentum=0.0, max_delta=0.03)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_lightning(c, return_logits=False)
    assert len([w for w in caught if "signal='accuracy'" in str(w.message)]) == 1
    assert c.updates == 0


@pytest.mark.parametrize("logged", ["val_loss", "valid_loss"])
def test_lightning_feeds_a_heldout_gap_controller_from_the_validation_loss(logged: str) -> None:
    L = pytest.importorskip("lightning")
    from maskwise.integrations.lightning import MaskwiseLightningCallback

    base = type(lightning_module(False))

    class WithValidation(base):  # type: ignore[misc, valid-type]
        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            logits = self.head(self.embed(batch["input_ids"]))
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB), batch["labels"].reshape(-1)
            )
            self.log(logged, loss)

    c = heldout_controller()
    coll = collator(c)
    train = DataLoader(token_lists(16), batch_size=8, collate_fn=coll)  # 2 batches per epoch
    val = DataLoader(token_lists(8, seed=1), batch_size=8, collate_fn=coll)
    references: list[float] = []

    class Spy(L.Callback):  # runs after maskwise's callback
        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                references.append(c.reference)

    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=6,
        callbacks=[MaskwiseLightningCallback(coll, controller=c), Spy()],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(WithValidation(), train, val)
    warned = [w for w in caught if "MaskwiseLightningCallback" in str(w.message)]
    if logged != "val_loss":  # not the reference_key: said once, over three validations
        assert len(warned) == 1 and "no logged 'val_loss'" in str(warned[0].message)
        assert c.updates == 0 and math.isnan(c.reference)
        return
    assert not warned
    # Validation after epochs 1, 2 and 3 (steps 2, 4, 6); the sanity check is not a reference.
    assert len(references) == 3
    assert references[-1] == pytest.approx(float(trainer.callback_metrics["val_loss"]))
    assert c.updates == 4  # the training losses of steps 3-6, after the first reference
