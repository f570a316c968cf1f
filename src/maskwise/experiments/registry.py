"""The tasks ``maskwise run`` knows: each task module declares a :class:`TaskSpec` (its name,
command-line options, default data and factory), :mod:`maskwise.experiments.tasks` registers the
built-in ones (:func:`register` adds others); the command line reads them from here and knows no
task itself.

Default data comes from ``--data`` or from ``$MASKWISE_DATA``, a root folder holding the
documented layout (``text/sst2``, ``image/fashion_mnist``, ``speech/fsdd``,
``lm/tinyshakespeare``, ``mt/multi30k``, ``summarization/scitldr``; see docs/experiments.md):
a task's default is ``$MASKWISE_DATA/<TaskSpec.data>``.

>>> names()[:3]
['text-classification', 'image-classification', 'speech-classification']
>>> get("text-classification").data
'text/sst2'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskwise.experiments.engine import Task

__all__ = [
    "DATA_ENV",
    "DEMO_DESCRIPTION",
    "DEMO_HELP",
    "DataNotFound",
    "Option",
    "TaskSpec",
    "demo_task",
    "get",
    "names",
    "register",
    "resolve_data",
    "specs",
]

#: The environment variable naming the data root.
DATA_ENV = "MASKWISE_DATA"


@dataclass(frozen=True)
class Option:
    """One command-line option of a task, passed to its factory as the keyword ``dest``.

    Args:
        flag: the option, e.g. ``"--train-size"`` (the keyword: ``train_size``).
        help: one line; ``%(default)s`` is replaced by the default.
        default: the value when the option is not given.
        type: the converter of the given string (``int``, ``float``); None: a string.
        choices: the allowed values, or None.
        flag_only: a switch (``store_true``): False unless given.
    """

    flag: str
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    choices: Sequence[str] | None = None
    flag_only: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def argparse_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``ArgumentParser.add_argument(flag, **kwargs)``."""
        if self.flag_only:
            return {"action": "store_true", "help": self.help}
        kwargs: dict[str, Any] = {"default": self.default, "help": self.help}
        if self.type is not None:
            kwargs["type"] = self.type
        if self.choices is not None:
            kwargs["choices"] = list(self.choices)
        return kwargs


@dataclass(frozen=True)
class TaskSpec:
    """A task of ``maskwise run``.

    Args:
        name: the task's name on the command line.
        help: one line for ``maskwise run --help``.
        description: a paragraph for ``maskwise run NAME --help``.
        build: ``build(data, **options) -> Task``: ``data`` a path (or a ``builtin_data`` name),
            ``options`` one keyword per :class:`Option`.
        data: the default data: a path under ``$MASKWISE_DATA`` (e.g. ``"text/sst2"``), or one
            of ``builtin_data``.
        dataset: the public data set that fits, and its format, for the message shown when the
            task has no data.
        options: the task's own command-line options.
        builtin_data: data names ``build`` loads without a path (e.g. ``"digits"``).
        run: how ``maskwise run`` runs the task, for tasks with more than one comparison
            (``run(task, **kwargs) -> results``, ``kwargs`` those of
            :func:`~maskwise.experiments.report.compare`); None: ``compare`` itself.
    """

    name: str
    help: str
    description: str
    build: Callable[..., Task]
    data: str
    dataset: str
    options: tuple[Option, ...] = ()
    builtin_data: tuple[str, ...] = ()
    run: Callable[..., dict[str, Any]] | None = None


_REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the tasks of ``maskwise run`` (registering the same spec again is a
    no-op; another spec with a registered name is an error)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"a task named {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    import maskwise.experiments.tasks  # noqa: F401 (its modules register the built-in tasks)


def specs() -> list[TaskSpec]:
    """Every registered task, in registration order."""
    _load_builtin()
    return list(_REGISTRY.values())


def names() -> list[str]:
    """The names of the registered tasks."""
    return [s.name for s in specs()]


def get(name: str) -> TaskSpec:
    """The task named ``name``; ``KeyError`` listing the known names otherwise."""
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(_REGISTRY)}).")
    return _REGISTRY[name]


class DataNotFound(ValueError):
    """A task has no data: neither ``--data`` nor ``$MASKWISE_DATA`` points at existing data."""


def resolve_data(
    spec: TaskSpec, given: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """The data of a run of ``spec``: ``given`` (``--data``), else ``$MASKWISE_DATA/<spec.data>``,
    else ``spec.data`` when the task loads it without a path.

    Raises:
        DataNotFound: the path does not exist, or no path is given and ``$MASKWISE_DATA`` is not
            set; the message says which option or variable to set and which data set fits.
    """
    environ = os.environ if environ is None else environ
    fits = f"Data that fits: {spec.dataset}."
    where = f"a folder that holds {spec.data}/"
    if given is not None:
        if given in spec.builtin_data or Path(given).exists():
            return given
        raise DataNotFound(f"data not found at {given} (--data). {fits}")
    if spec.data in spec.builtin_data:
        return spec.data
    root = environ.get(DATA_ENV)
    if not root:
        raise DataNotFound(f"no data: pass --data PATH, or set {DATA_ENV} to {where}. {fits}")
    path = Path(root) / spec.data
    if not path.exists():
        raise DataNotFound(
            f"data not found at {path} ({DATA_ENV}={root}): set {DATA_ENV} to {where}, "
            f"or pass --data PATH. {fits}"
        )
    return str(path)


def demo_task() -> Task:
    """The task of ``maskwise demo``: a small ViT on 300 of scikit-learn's 8x8 digits (bundled:
    no files, no ``$MASKWISE_DATA``), up to 150 epochs with patience 30 (the unmasked model's
    best dev epoch falls near epoch 65: it overfits well inside the budget)."""
    from dataclasses import replace

    from maskwise.experiments.tasks.image import ImageClassification

    task = ImageClassification("digits", train_size=300, epochs=150)
    task.train_config = replace(task.train_config, patience=30)
    return task


#: ``maskwise demo``'s one-line help and its description.
DEMO_HELP = "image classification on scikit-learn's digits: none / static / dynamic masking"
DEMO_DESCRIPTION = (
    "Train a small ViT on 300 of scikit-learn's 8x8 digits without masking, with static patch "
    "masking (rate tuned on dev) and with dynamic masking, on 5 fresh seeds shared by the arms; "
    "print the paired differences with 95 % confidence intervals and write results and plots."
)
