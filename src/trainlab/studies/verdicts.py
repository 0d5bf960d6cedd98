"""Judging claims over seeds: each side's runs as mean ± 95 % CI, a test (Welch's t-test of A against B, or
the one-sample t-test of A against the threshold), Hedges' g, and the p-value corrected for all the claims
of the study (Holm–Bonferroni). A claim holds when its direction is right and the corrected p < 0.05.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from trainlab.claims import Claim
from trainlab.repeats.stats import Summary, hedges_g, holm, one_sample_p, summarize, welch_p

ALPHA = 0.05
HOLDS, FAILS, NOT_JUDGED = "holds", "does not hold", "not judged"


@dataclass(frozen=True)
class Verdict:
    """A claim, its two sides' summaries, the tests and what they say (`why` explains a verdict)."""

    experiment: str
    claim: Claim
    a: Summary | None = None
    b: Summary | None = None
    p: float | None = None
    p_holm: float | None = None
    g: float | None = None
    verdict: str = NOT_JUDGED
    why: str = ""

    @property
    def right_way(self) -> bool:
        """Whether A's mean lies on the side the claim expects (of B's mean, or of the threshold)."""
        if self.a is None:
            return False
        expect, other = self.claim.expect, self.b.mean if self.b is not None else self.claim.threshold
        return {
            "more": self.a.mean > other,
            "less": self.a.mean < other,
            "chance": self.a.mean < other,
            "reaches": self.a.mean >= other,
        }[expect]


def _summary(values: Sequence[float]) -> Summary | None:
    return summarize(values) if values else None


def judge(experiment: str, claim: Claim, a: Sequence[float], b: Sequence[float], data: str) -> Verdict:
    """The claim on its runs' values (`b` empty for a threshold), before the correction for many claims."""
    found = Verdict(experiment, claim, _summary(a), _summary(b))
    sides = [("a", a)] + ([("b", b)] if claim.b is not None else [])
    for side, values in sides:
        if not values:
            return replace(found, why=f"no finished run of {side} has {claim.metric} yet")
        if len(values) < 2:
            return replace(found, why=f"{side} has 1 run: a verdict needs repeats >= 2")
    if claim.b is not None:
        found = replace(found, p=welch_p(a, b), g=hedges_g(a, b))
    else:
        found = replace(found, p=one_sample_p(a, claim.threshold), g=hedges_g(a, claim.threshold))
    if claim.data is not None and claim.data != data:
        return replace(found, p=None, why=f"its threshold was set on {claim.data}; this study ran {data}")
    return found


def correct(verdicts: list[Verdict]) -> list[Verdict]:
    """Holm–Bonferroni over the judged claims, then each claim's verdict."""
    judged = [index for index, v in enumerate(verdicts) if v.p is not None]
    adjusted = dict(zip(judged, holm([verdicts[i].p for i in judged]), strict=True))
    final = []
    for index, verdict in enumerate(verdicts):
        if index not in adjusted:
            final.append(verdict)
            continue
        p_holm = adjusted[index]
        verdict = replace(verdict, p_holm=p_holm)
        if not verdict.right_way:
            other = "B's" if verdict.b is not None else "the threshold"
            side = {"more": "not above", "less": "not below", "chance": "not below", "reaches": "below"}
            why = f"A's mean is {side[verdict.claim.expect]} {other}"
            final.append(replace(verdict, verdict=FAILS, why=why))
        elif p_holm >= ALPHA:
            runs = f"{verdict.a.count}" + (f" and {verdict.b.count}" if verdict.b else "")
            why = f"not shown with {runs} runs (p (Holm) = {p_holm:.2g} ≥ {ALPHA})"
            final.append(replace(verdict, verdict=FAILS, why=why))
        else:
            final.append(replace(verdict, verdict=HOLDS, why=""))
    return final
