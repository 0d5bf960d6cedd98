"""DataModules defined outside trainlab, as a user's own code is, for `data=custom` tests."""
