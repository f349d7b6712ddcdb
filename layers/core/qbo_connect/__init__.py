"""qbo_connect: the shared package behind every function of the QuickBooks connection service.

Handlers stay thin; the logic lives here, one module per concern (docs/architecture.md).
"""

__version__ = "0.1.0"
