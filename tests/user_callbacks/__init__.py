"""Lightning callbacks defined outside trainlab, as a user's own are, for `callbacks.extra` tests."""
