"""Pretraining seed noise: the token and decay arms with pretraining seeds 1 and 2 (seed 0 is in
pretrain.json), the same text, tokenizer, held-out texts and fixed-mask scoring.

Run from the repository root, after the run of docs/RESULTS.md (its cache, /tmp/mw/cache2,
holds the tokenizer the checkpoints were trained with)::

    PYTHONPATH=src python docs/results/pretrain-finetune-sst2/pretraining/seed_check.py OUT.json
"""

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import torch

CACHE = "/tmp/mw/cache2"


def one(arm_seed: tuple[str, int]) -> dict:
    arm, seed = arm_seed
    torch.set_num_threads(1)
    from maskwise.experiments.pretraining import PretrainConfig, pretrain
    from maskwise.experiments.tasks.pretrain import PretrainFinetune

    t = PretrainFinetune(
        "../shared/data/text/sst2",
        train_size=2000,
        pretrain_steps=300,
        cache=CACHE,
        pretrain_arms="token",
    )
    base = t.pretrain_settings(arm)
    cfg = PretrainConfig(
        arm,
        steps=base.steps,
        batch_size=base.batch_size,
        lr=base.lr,
        eval_every=base.eval_every,
        seed=seed,
    )
    _, rec = pretrain(cfg, t.encoder, t.tokenizer, t.corpus_train, t.corpus_heldout, cache=CACHE)
    return {"arm": arm, "seed": seed, **rec["heldout"], "minutes": rec["seconds"] / 60}


if __name__ == "__main__":
    jobs = [("token", 1), ("decay", 1), ("token", 2), ("decay", 2)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        out = list(pool.map(one, jobs))
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
    print(out)
