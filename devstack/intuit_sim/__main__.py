"""Run the Intuit simulator on its own (see :mod:`devstack.intuit_sim.cli`)."""

import sys

from devstack.intuit_sim.cli import main

sys.exit(main())
