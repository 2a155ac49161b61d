"""What each launcher in ``experiments/`` does, as importable functions.

One module per launcher, each with ``train_and_evaluate(config, workdir, *, seeds=None, ...)``
(the flax examples' ``train.train_and_evaluate(config, workdir)``): validate the config,
check the workdir's run record (:mod:`vae_xai.workdir`), train or resume, evaluate, and write
``results.json`` through the one results schema (:mod:`vae_xai.results`). ``seeds`` runs each
seed in ``workdir/seed_N`` and aggregates them (:mod:`vae_xai.seeds`). The data location and
the category are keyword arguments next to the config, not config fields: they are the data
identity the run record compares (its fingerprint), not training settings, and a workdir's
data may move. A launcher (``python -m experiments.NAME``) only parses flags and calls its
module's ``train_and_evaluate``, so a notebook or a test can do the same.
"""
