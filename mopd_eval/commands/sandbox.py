"""``mopd-eval sandbox``: the command-line face of ``sandbox.cli``, imported only when it runs."""

from mopd_eval.commands import delegate

add_arguments, run = delegate("sandbox.cli")
