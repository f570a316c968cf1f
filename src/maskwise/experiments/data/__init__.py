"""Data loaders for the experiment tasks: the formats of the documented data layout, from any
path.

Every loader returns plain Python / torch objects and raises ``ValueError`` with the file and the
reason when a file does not have the expected form (missing split, unknown label format,
unreadable WAV). Nothing here downloads anything. Text files are read as UTF-8; a byte that is not
valid UTF-8 becomes U+FFFD (TREC's training file has one).

* :mod:`~maskwise.experiments.data.files`: splits, split files, text and JSON lines;
* :mod:`~maskwise.experiments.data.text`: text classification (``<label> <text>`` lines,
  ``.tsv`` / ``.csv``, ``.jsonl``);
* :mod:`~maskwise.experiments.data.images`: MNIST-format IDX files, scikit-learn's digits;
* :mod:`~maskwise.experiments.data.audio`: WAV files, log-mel features, FSDD / CSV manifests;
* :mod:`~maskwise.experiments.data.documents`: documents for language modelling;
* :mod:`~maskwise.experiments.data.pairs`: text pairs for translation and summarization.
"""

from maskwise.experiments.data.audio import (
    cache_dir,
    frame_lengths,
    load_speech,
    log_mel,
    mel_filterbank,
    read_wav,
    speaker_of,
    speech_features,
)
from maskwise.experiments.data.documents import read_documents, split_documents
from maskwise.experiments.data.files import (
    Split,
    carve,
    carve_list,
    find_split_files,
    json_object,
    label_key,
    open_text,
    split_of,
)
from maskwise.experiments.data.images import load_digits, load_idx, load_idx_dir
from maskwise.experiments.data.pairs import (
    Pairs,
    detect_fields,
    load_jsonl_pairs,
    load_jsonl_references,
    load_parallel,
    load_summarization,
    load_translation,
)
from maskwise.experiments.data.text import load_text_classification, read_labelled_texts

__all__ = [
    "Pairs",
    "Split",
    "cache_dir",
    "frame_lengths",
    "carve",
    "carve_list",
    "detect_fields",
    "find_split_files",
    "json_object",
    "label_key",
    "load_digits",
    "load_idx",
    "load_idx_dir",
    "load_jsonl_pairs",
    "load_jsonl_references",
    "load_parallel",
    "load_speech",
    "load_summarization",
    "load_text_classification",
    "load_translation",
    "log_mel",
    "mel_filterbank",
    "open_text",
    "read_documents",
    "read_labelled_texts",
    "read_wav",
    "speaker_of",
    "speech_features",
    "split_documents",
    "split_of",
]
