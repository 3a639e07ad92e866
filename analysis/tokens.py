"""Token-level teacher signal: where a peer context changes the teacher's verdict.

Reads the store of ``mopd-eval signal --save-token-logprobs`` (``analysis/token_logprobs.py``).
"""

from __future__ import annotations

import numpy as np

from analysis.scores import BASE_CONDITION
from analysis.token_logprobs import TokenLogprobs


def advantage(store: TokenLogprobs, condition: str, problem_id: str, rollout_id: str,
              reference: TokenLogprobs | None = None) -> np.ndarray | None:
    """A_t(c) = log p(y_t | context_c, y_<t) - log p(y_t | question, y_<t), per response token.

    The second term is the store's own ``base`` row, or ``reference``'s (a student's store: the
    teacher-minus-student signal). ``None`` when either row is missing. float64.
    """
    lp = store.logprobs(condition, problem_id, rollout_id)
    ref = (reference or store).logprobs(BASE_CONDITION, problem_id, rollout_id)
    if lp is None or ref is None:
        return None
    if len(lp) != len(ref):
        raise ValueError(f"{problem_id}/{rollout_id}: {len(lp)} tokens under {condition}, {len(ref)} under the reference")
    return lp.astype(np.float64) - ref.astype(np.float64)
