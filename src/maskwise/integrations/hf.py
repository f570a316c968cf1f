"""Hugging Face ``transformers`` integration (needs the ``hf`` extra).

A maskwise collator is a ``Trainer(data_collator=...)`` as it is: with the default
``redraw="always"`` every example's mask is drawn anew each time it is collated, so masks change
every epoch although ``Trainer`` never calls the collator's ``set_epoch``. What this module adds:

* :class:`MaskwiseCallback`: passes the epoch (for ``redraw="epoch"``) and the step (for
  schedule rates) to the collators, feeds a ``"loss"`` controller from the logged loss, records
  the rate, and checks when training begins that ``Trainer`` keeps the fields the collators
  need (``TrainingArguments(remove_unused_columns=True)``, the default, removes ``idx``,
  ``word_ids`` and ``offset_mapping``);
* :class:`MaskwiseTrainer`: feeds a controller (and a difficulty tracker) from every training
  step's logits instead, on the labelled positions only::

    from maskwise.collators import MLMCollator
    from maskwise.dynamic import ReliabilityController
    from maskwise.integrations.hf import MaskwiseCallback, MaskwiseTrainer

    controller = ReliabilityController(0.15)
    collator = MLMCollator.from_tokenizer(tokenizer, rate=controller, seed=0)
    trainer = MaskwiseTrainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                              controller=controller, callbacks=[MaskwiseCallback(collator)])

Tested with transformers 5.24 and, for ``MaskwiseTrainer``, with the ``compute_loss`` signature of
transformers 4.40-4.45 (no ``num_items_in_batch``).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from maskwise.dynamic import feed, reliability
from maskwise.functional.consistency import CONSISTENCY_KINDS, consistency_loss

__all__ = ["Consistency", "MaskwiseCallback", "MaskwiseTrainer"]

_TAKES: dict[Any, bool] = {}  # function -> whether it takes num_items_in_batch


def _takes_num_items(method: Callable[..., Any]) -> bool:
    """Whether ``method`` takes ``num_items_in_batch`` (transformers >= 4.46) or not."""
    fn = getattr(method, "__func__", method)
    if fn not in _TAKES:
        params = inspect.signature(fn).parameters
        _TAKES[fn] = "num_items_in_batch" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
    return _TAKES[fn]


def _example_fields(dataset: Any) -> set[str] | None:
    """The fields of ``dataset``'s examples, when they can be seen cheaply (a
    ``datasets.Dataset``'s columns, or the keys of a map-style dataset's first example)."""
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):
        return set(names)
    if dataset is None or not callable(getattr(dataset, "__getitem__", None)):
        return None
    try:
        first = dataset[0]
    except Exception:  # an iterable or empty dataset, or one indexed otherwise: nothing to see
        return None
    return set(first) if isinstance(first, Mapping) else None


def _check_fields(args: Any, collators: Iterable[Any], dataset: Any) -> None:
    """Fail (whole-word masking) or warn (keyed masks) when
    ``TrainingArguments(remove_unused_columns=True)`` removes fields a collator needs.

    Trainer keeps only the fields named by the model's ``forward``: ``word_ids`` and
    ``offset_mapping`` never are, and the index only matters if the data has one.
    """
    if not getattr(args, "remove_unused_columns", False):
        return
    collators = list(collators)
    for c in collators:
        if getattr(c, "unit", None) == "word":
            raise ValueError(
                f"{type(c).__name__}(unit='word') needs the 'word_ids' or 'offset_mapping' field "
                "of every example, which TrainingArguments(remove_unused_columns=True) removes "
                "before the collator sees it (Trainer keeps the arguments of the model's forward "
                "only): pass remove_unused_columns=False."
            )
    fields = _example_fields(dataset)
    for c in collators:
        key = getattr(c, "index_key", None)
        if key is not None and fields is not None and key in fields:
            warnings.warn(
                f"TrainingArguments(remove_unused_columns=True) removes the {key!r} field of the "
                f"examples before {type(c).__name__} sees it, so it cannot key masks by example: "
                "they come from per-worker streams (new every batch, but not reproducible "
                "across numbers of workers or on resume). Pass remove_unused_columns=False to "
                "keep keyed masks.",
                UserWarning,
                stacklevel=3,
            )


class MaskwiseCallback(TrainerCallback):
    """Keep maskwise collators in step with ``Trainer``.

    * ``on_train_begin``: checks that ``Trainer`` keeps the fields the collators need (an error
      for whole-word masking, a warning for a dropped index), and warns when ``controller``
      can never be fed here (only a ``"loss"`` or ``"heldout_gap"`` controller can be fed from
      the logged loss; :class:`MaskwiseTrainer` feeds the others), or, for ``"heldout_gap"``,
      when ``Trainer`` never evaluates;
    * ``on_epoch_begin``: ``collator.set_epoch(epoch)`` (new masks every epoch with
      ``redraw="epoch"``, different keys on resume);
    * ``on_step_end``: ``collator.set_step(global_step)`` (schedule rates);
    * ``on_log``: with a ``"loss"`` or ``"heldout_gap"`` controller, the logged training loss
      to the controller (unless a :class:`MaskwiseTrainer` already feeds that controller every
      step); with a ``monitor``, records the rate and the logged loss; adds ``maskwise_rate``
      to the logs;
    * ``on_evaluate``: with a ``"heldout_gap"`` controller, ``controller.set_reference`` with
      the evaluation's ``eval_loss``: the held-out loss the training loss is compared with
      (the evaluation set is the held-out data; never evaluate on the test set during
      training).

    Args:
        collators: objects with ``set_epoch`` (and ``set_step``): ``MLMCollator``, ``T5Collator``.
        controller: optional controller fed from the logged training loss.
        monitor: optional :class:`~maskwise.monitor.MaskMonitor`.
    """

    def __init__(self, *collators: Any, controller: Any = None, monitor: Any = None) -> None:
        for c in collators:
            if not callable(getattr(c, "set_epoch", None)):
                raise TypeError(f"{type(c).__name__} has no set_epoch(epoch) method.")
        self.collators, self.controller, self.monitor = collators, controller, monitor
        # Set by MaskwiseTrainer: the controller it feeds, and the collator it checked.
        self._fed_by_trainer: Any = None
        self._checked_by_trainer: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loader = kwargs.get("train_dataloader")
        unchecked = [c for c in self.collators if c is not self._checked_by_trainer]
        _check_fields(args, unchecked, getattr(loader, "dataset", None))
        c = self.controller
        signal = getattr(c, "signal", None)
        strategy = getattr(args, "eval_strategy", "no")
        if signal == "heldout_gap" and getattr(strategy, "value", strategy) == "no":
            warnings.warn(
                "MaskwiseCallback: the controller (signal='heldout_gap') compares the training "
                "loss with the evaluation loss, but Trainer never evaluates, so the rate never "
                "moves: set eval_strategy ('steps' or 'epoch') and an eval_dataset.",
                UserWarning,
                stacklevel=2,
            )
        if (
            c is not None
            and c is not self._fed_by_trainer
            and signal not in ("loss", "heldout_gap")
        ):
            warnings.warn(
                f"MaskwiseCallback cannot feed a controller with signal={signal!r}: it sees only "
                "the logged training loss, so the rate would never move. Pass the controller to "
                "MaskwiseTrainer(controller=...), which feeds it from every step's logits, use "
                "signal='loss', or call controller.update(...) yourself.",
                UserWarning,
                stacklevel=2,
            )

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # At the start of epoch k, state.epoch is k (a float; fractional only after a resume).
        epoch = int(state.epoch or 0.0)
        for c in self.collators:
            c.set_epoch(epoch)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for c in self.collators:
            if callable(getattr(c, "set_step", None)):
                c.set_step(int(state.global_step))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if logs is None or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if self.controller is not self._fed_by_trainer:  # fed once per step, by one of us
            # Only a "loss" or "heldout_gap" controller can use the logged loss.
            feed(self.controller, loss=loss)
        rate = self._rate()
        if rate is not None:
            logs["maskwise_rate"] = rate
            # Trainer.log appended these logs to log_history before calling us: keep it there too.
            if state.log_history and state.log_history[-1].get("loss") == logs.get("loss"):
                state.log_history[-1]["maskwise_rate"] = rate
        if self.monitor is not None:
            self.monitor.record(int(state.global_step), rate=rate, loss=loss)

    def on_evaluate(
        self,
        args: Any,
        state: Any,
        control: Any,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        c = self.controller
        if getattr(c, "signal", None) != "heldout_gap" or not metrics:
            return
        loss = metrics.get("eval_loss")
        if loss is not None and math.isfinite(float(loss)) and float(loss) > 0:
            c.set_reference(float(loss))

    def _rate(self) -> float | None:
        if self.controller is not None:
            return float(self.controller.rate)
        for c in self.collators:
            if hasattr(c, "rate"):
                return float(c.rate)
        return None


@dataclass(frozen=True)
class Consistency:
    """A masked-view consistency term for :class:`MaskwiseTrainer` (Cutoff, R-Drop, UDA).

    Every training step runs the model a second time on the batch with ``inputs[key]`` masked
    by ``masker`` (any maskwise module, e.g. ``TokenMask(0.1, mask_id=...)``; it gets the
    batch's ``attention_mask`` when its ``forward`` takes one) and adds
    ``weight * consistency_loss(masked_logits, logits, kind=kind)`` to the loss, counted where
    ``labels != -100`` when the labels are per position. With ``kind="kl"`` (default) the
    first view's prediction is a detached teacher; ``"sym_kl"`` / ``"js"`` train both views.

    Args:
        masker: the maskwise masker of the second view (in training mode).
        weight: the term's weight, >= 0.
        kind: ``"kl"``, ``"sym_kl"`` or ``"js"``.
        key: the input field the masker masks.
    """

    masker: Any
    weight: float = 1.0
    kind: str = "kl"
    key: str = "input_ids"

    def __post_init__(self) -> None:
        if not callable(self.masker):
            raise TypeError(f"masker must be a maskwise masker ({self.masker!r} given).")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)):
            raise ValueError(f"weight must be a finite number >= 0 ({self.weight!r} given).")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0 ({self.weight} given).")
        if self.kind not in CONSISTENCY_KINDS:
            raise ValueError(f"kind must be one of {CONSISTENCY_KINDS} ({self.kind!r} given).")

    def term(self, model: Any, inputs: Mapping[str, Any], logits: Any) -> torch.Tensor:
        """``weight`` times the consistency of a masked second view with ``logits``."""
        if not isinstance(logits, torch.Tensor):
            raise TypeError("consistency needs the model's logits in its outputs.")
        if self.key not in inputs:
            raise KeyError(f"consistency masks inputs[{self.key!r}], which the batch lacks.")
        x = inputs[self.key]
        kwargs = {}
        if "attention_mask" in inputs and _takes(self.masker, "attention_mask"):
            kwargs["attention_mask"] = inputs["attention_mask"]
        out = self.masker(x, **kwargs)
        masked = out[0] if isinstance(out, tuple) else out
        view = {k: v for k, v in inputs.items() if k != "labels"}
        view[self.key] = masked
        second = model(**view)
        other = second["logits"] if isinstance(second, Mapping) else second.logits
        labels = inputs.get("labels")
        valid = None
        if isinstance(labels, torch.Tensor) and labels.shape == logits.shape[:-1]:
            valid = labels != -100
        return self.weight * consistency_loss(other, logits, kind=self.kind, valid=valid)


def _takes(fn: Any, name: str) -> bool:
    inner = getattr(fn, "masker", None)  # a DynamicMask passes its keywords to its masker
    if isinstance(inner, torch.nn.Module):
        fn = inner
    forward = getattr(fn, "forward", fn)
    try:
        return name in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


class MaskwiseTrainer(Trainer):
    """``Trainer`` that feeds a controller (and a difficulty tracker) from every training step's
    logits and labels, with no extra forward pass.

    Only the labelled positions (``labels != -100``) are scored: their logits are gathered to
    (N, V) before :func:`~maskwise.dynamic.reliability`, instead of scoring all B x L x V
    logits (for MLM, N is about 15 % of B x L). The gather is a boolean index, so on a GPU it
    reads the number of labelled positions on the host, once per step. A
    :class:`MaskwiseCallback` given the same controller reports its rate but no longer updates
    it, so the controller moves once per micro-batch (once per optimizer step without gradient
    accumulation; with it, choose ``max_delta`` for the number of micro-batches).

    Works with the ``compute_loss`` of every transformers the ``hf`` extra allows (with
    ``num_items_in_batch`` from 4.46, without it before).

    Extra keyword arguments: ``controller`` (a ``ReliabilityController``), ``tracker`` (a
    ``DifficultyTracker`` keyed by the label token ids), ``monitor`` (a ``MaskMonitor``),
    ``consistency`` (a :class:`Consistency`: adds a masked-view consistency term to the loss).
    """

    def __init__(
        self,
        *args: Any,
        controller: Any = None,
        tracker: Any = None,
        monitor: Any = None,
        consistency: Consistency | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if consistency is not None and not isinstance(consistency, Consistency):
            raise TypeError(
                f"consistency must be a maskwise Consistency ({type(consistency).__name__} given)."
            )
        self.maskwise_consistency = consistency
        self.maskwise_controller, self.maskwise_tracker, self.maskwise_monitor = (
            controller,
            tracker,
            monitor,
        )
        self._attention: Any = None
        self._warned_unfed = False

    def train(self, *args: Any, **kwargs: Any) -> Any:
        collator = self.data_collator
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, MaskwiseCallback):
                cb._fed_by_trainer = self.maskwise_controller
                cb._checked_by_trainer = collator
        if callable(getattr(collator, "set_epoch", None)):
            _check_fields(self.args, [collator], self.train_dataset)
        return super().train(*args, **kwargs)

    def compute_loss(  # type: ignore[override]
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        # Read before the parent runs: with label smoothing or a compute_loss_func it pops them.
        labels = inputs.get("labels")
        batch = dict(inputs)
        parent = super().compute_loss
        if _takes_num_items(parent):
            loss, outputs = parent(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
        else:  # transformers 4.40-4.45
            loss, outputs = parent(model, inputs, return_outputs=True)
        self._attention = batch.get("attention_mask")
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if logits is None:
            logits = getattr(outputs, "logits", None)
        if model.training and self.maskwise_consistency is not None:
            term = self.maskwise_consistency.term(model, batch, logits)
            loss = loss + term * self._loss_scale(num_items_in_batch)
        if model.training:
            if (
                labels is not None
                and isinstance(logits, torch.Tensor)
                and logits.shape[:-1] == labels.shape
            ):
                self._observe(logits, labels, batch.get("input_ids"))
            else:
                self._warn_unfed(logits, labels)
        return (loss, outputs) if return_outputs else loss

    def _loss_scale(self, num_items_in_batch: Any) -> float:
        """The factor that puts a per-micro-batch mean on the scale of Trainer's loss: when the
        model normalises its loss by the items of all accumulated micro-batches, Trainer skips
        its division by the accumulation steps (and multiplies by the processes when tokens are
        averaged across devices), so the term must be scaled the same way."""
        if num_items_in_batch is None or not getattr(self, "model_accepts_loss_kwargs", False):
            return 1.0
        steps = getattr(self, "current_gradient_accumulation_steps", None)
        scale = 1.0 / float(steps or self.args.gradient_accumulation_steps)
        if getattr(self.args, "average_tokens_across_devices", False):
            scale *= float(self.accelerator.num_processes)
        return scale

    def _warn_unfed(self, logits: Any, labels: Any) -> None:
        wants = (self.maskwise_controller, self.maskwise_tracker, self.maskwise_monitor)
        if self._warned_unfed or all(w is None for w in wants):
            return
        self._warned_unfed = True
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else None
        labels_shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else None
        warnings.warn(
            "MaskwiseTrainer cannot feed its controller / tracker / monitor: it needs the "
            "model's 'logits' (..., C) and the batch's 'labels' (...) of one shape but got "
            f"logits {shape} and labels {labels_shape}.",
            UserWarning,
            stacklevel=3,
        )

    def _observe(
        self, logits: torch.Tensor, labels: torch.Tensor, input_ids: torch.Tensor | None
    ) -> None:
        labelled = labels != -100  # (B, L), or (B,) for sequence classification
        # Score the labelled rows only: (N, V) instead of (B, L, V).
        targets = labels[labelled]  # (N,)
        r = reliability(logits.detach()[labelled], targets)
        c = self.maskwise_controller
        tokens = input_ids if input_ids is not None and input_ids.shape == labels.shape else None
        # The label is the original token: the tracker keys difficulty by it.
        feed(c, self.maskwise_tracker, reliability=r, keys=None if tokens is None else targets)
        if self.maskwise_monitor is not None:
            rate = float(c.rate) if c is not None else None
            # The targets are the masked positions; keys: the original token there, else the input.
            keys = labels if tokens is None else torch.where(labelled, labels, tokens)
            self.maskwise_monitor.record(
                int(self.state.global_step),
                rate=rate,
                mask=labelled,
                valid=self._attention,
                reliability=r,
                keys=keys,
            )

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        c = self.maskwise_controller
        if c is not None and "loss" in logs:
            logs = {**logs, "maskwise_rate": float(c.rate)}  # reaches log_history and reporters
        super().log(logs, *args, **kwargs)
