"""The experiment tasks.

Each module declares its tasks' :class:`~maskwise.experiments.registry.TaskSpec` (name,
command-line options, default data, factory); importing this package registers them, in the
order ``maskwise run --help`` lists them.

* :mod:`~maskwise.experiments.tasks.text`: text classification;
* :mod:`~maskwise.experiments.tasks.image`: image classification;
* :mod:`~maskwise.experiments.tasks.speech`: speech classification;
* :mod:`~maskwise.experiments.tasks.lm`: language modelling;
* :mod:`~maskwise.experiments.tasks.seq2seq`: translation and summarization;
* :mod:`~maskwise.experiments.tasks.pretrain`: MLM pretraining (Hugging Face ``Trainer``), then
  fine-tuning for text classification (registered when ``transformers`` is installed);
* :mod:`~maskwise.experiments.tasks.parts`: the parts they share.
"""

import importlib.util

from maskwise.experiments.registry import register
from maskwise.experiments.tasks import image, lm, seq2seq, speech, text
from maskwise.experiments.tasks.image import ImageClassification
from maskwise.experiments.tasks.lm import LanguageModeling
from maskwise.experiments.tasks.seq2seq import Seq2SeqTask, summarization, translation
from maskwise.experiments.tasks.speech import SpeechClassification
from maskwise.experiments.tasks.text import TextClassification

__all__ = [
    "ImageClassification",
    "LanguageModeling",
    "Seq2SeqTask",
    "SpeechClassification",
    "TextClassification",
    "summarization",
    "translation",
]

for _spec in (
    text.SPEC,
    image.SPEC,
    speech.SPEC,
    lm.SPEC,
    seq2seq.TRANSLATION_SPEC,
    seq2seq.SUMMARIZATION_SPEC,
):
    register(_spec)

if importlib.util.find_spec("transformers") is not None:  # the hf extra (imported on use)
    from maskwise.experiments.tasks import pretrain

    register(pretrain.SPEC)
