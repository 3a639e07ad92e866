"""Answer checkers. Code verdicts come from ``sandbox``; this package holds the rest."""
