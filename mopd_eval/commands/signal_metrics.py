"""``mopd-eval signal-metrics``: the command-line face of ``analysis.signal_metrics``, imported only when it runs."""

from mopd_eval.commands import delegate

add_arguments, run = delegate("analysis.signal_metrics")
