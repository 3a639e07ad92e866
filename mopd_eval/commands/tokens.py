"""``mopd-eval tokens``: the command-line face of ``analysis.token_report``, imported only when it runs."""

from mopd_eval.commands import delegate

add_arguments, run = delegate("analysis.token_report")
