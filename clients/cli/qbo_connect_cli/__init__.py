"""``qbo-connect``: the operator's command line for a qbo-connect stack.

It speaks the same invoke contracts as any other workload (ConnectionsFunction and
GetTokenFunction), so everything it does is something a backend could do with ``boto3``; it
only finds the functions for you (a deployed stack's Outputs, or the local stack's
``.devstack/endpoints.json``) and prints tables for people or JSON for scripts.
"""

__version__ = "0.1.0"
