"""The verdict record every verifier returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one response.

    ``success`` is strict (all tests, exact answer); ``reward`` is what training optimises
    (1.0/0.0 here); ``partial`` is the fraction of tests passed (code) or equals ``reward``;
    ``feedback`` is the text SDPO/MOPD show the teacher (None on success); ``status`` names the
    outcome: ``correct``, ``wrong``, ``no_answer``, ``timeout``, ``runtime_error``,
    ``invalid_test`` (the problem itself is broken), ...
    """

    reward: float
    success: bool
    partial: float
    feedback: str | None
    status: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def correct(cls) -> Verdict:
        return cls(1.0, True, 1.0, None, "correct")

    @classmethod
    def failed(cls, status: str, feedback: str, partial: float = 0.0) -> Verdict:
        return cls(0.0, False, partial, feedback, status)
