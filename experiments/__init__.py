"""absl launchers, one per paper table/figure; their configs are in ``experiments/configs``.

Importing this package (or any module in it) changes nothing outside it: the launchers' one
process-wide setting, ``--config`` paths that also resolve to the installed configs, is made by
:func:`experiments.launch.define_common_flags` when a launcher defines its flags.
"""
