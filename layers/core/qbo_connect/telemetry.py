"""Powertools Logger and Metrics shared by every handler.

Tracing is Lambda's own active tracing (``Tracing: Active`` in the template): the invocation
segment is recorded without any SDK in the function. There is deliberately no X-Ray SDK here
(Powertools Tracer imports it, about 140 ms of every cold start, and it is in maintenance mode);
deeper traces come from OpenTelemetry through the ADOT layer when the ``EnableOpenTelemetry``
parameter is on, with no code change (see README "Tracing").

One Metrics instance per container (Powertools keeps metrics in a shared registry); the
handlers wrap themselves with ``metrics.log_metrics`` so metrics flush once per invocation as
EMF lines. Refresh outcomes are turned into metrics by ``qbo_connect.vault.observer``, so the
refresh protocol itself stays free of telemetry concerns.
"""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics

# Most invocations (a warm get_token) record no metric; Powertools warns about that on every
# flush, which is noise in every log stream, not a problem.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
metrics = Metrics()
