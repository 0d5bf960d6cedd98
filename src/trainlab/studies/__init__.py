"""Studies: the claims experiments state (trainlab.claims) judged over seeds (verdicts), after a study
has trained what is missing (run), in one report (report)."""
