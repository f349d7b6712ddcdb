"""Test helpers shared by the integration suites (see devstack_process)."""
