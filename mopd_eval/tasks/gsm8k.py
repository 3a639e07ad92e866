"""GSM8K (``openai/gsm8k``, config ``main``): ``question``, and ``answer`` ending ``#### N``.

Prompt and verdict as the other math tasks (``math_tasks.py``): the last ``\\boxed{}`` of the
response, compared as an integer with the number after the last ``answer_marker`` of the gold.
"""

from __future__ import annotations

from mopd_eval.tasks.data_files import Record
from mopd_eval.tasks.math_tasks import MathFileTask


class GSM8KTask(MathFileTask):
    name = "gsm8k"
    mode = "aime"  # integer answers
    text_fields = ("question",)
    id_fields = ()
    source_hint = "hf:openai/gsm8k:main:test"

    def __init__(self, timeout_s: float = 10.0, answer_marker: str = "####") -> None:
        super().__init__(timeout_s)
        self.answer_marker = answer_marker

    def answer(self, rec: Record) -> str:
        text = super().answer(rec)
        if self.answer_marker not in text:
            raise rec.error(f"no {self.answer_marker!r} before the final answer", field="answer")
        return text.rsplit(self.answer_marker, 1)[1].strip().replace(",", "")
