"""Networks defined outside trainlab, as a user's own code is, for `model=custom` tests."""
