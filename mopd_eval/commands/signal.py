"""``mopd-eval signal``: the command-line face of ``analysis.signal_study``, imported only when it runs."""

from mopd_eval.commands import delegate

add_arguments, run = delegate("analysis.signal_study")
