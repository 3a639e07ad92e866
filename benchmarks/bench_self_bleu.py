"""Self-BLEU: mopd_eval.diversity.self_bleu against NLTK's sentence_bleu loop, same inputs, same run."""

import random
import time

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from mopd_eval.diversity import self_bleu


def nltk_self_bleu(groups):
    smooth = SmoothingFunction().method1
    return sum(sentence_bleu([g for j, g in enumerate(groups) if j != i], h,
                             smoothing_function=smooth) for i, h in enumerate(groups)) / len(groups)


def best_of(fn, arg, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn(arg)
        times.append(time.perf_counter() - t)
    return min(times), value


rng = random.Random(0)  # seeded: synthetic code-like token streams
vocab = [f"w{i}" for i in range(200)]
for k, length in [(8, 400), (16, 400), (64, 300)]:
    groups = [[rng.choice(vocab) for _ in range(length)] for _ in range(k)]
    t_ours, v_ours = best_of(self_bleu, groups)
    t_ref, v_ref = best_of(nltk_self_bleu, groups, repeat=1 if k > 16 else 3)
    assert abs(v_ours - v_ref) < 1e-12
    print(f"k={k:3d} L={length}: ours {t_ours*1e3:8.1f} ms  nltk {t_ref*1e3:8.1f} ms  "
          f"speed-up x{t_ref / t_ours:.1f}")
