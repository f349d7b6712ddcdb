"""The test suite, in tiers: unit, component, http, reliability, browser, iam."""
