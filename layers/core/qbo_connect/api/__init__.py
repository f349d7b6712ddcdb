"""The QuickBooks API proxy (QuickBooksApiFunction): calls made with the vault's token.

``paths`` (what may be called), ``faults`` (Intuit's error bodies in one shape), ``governor``
(per-realm rate, in-flight and cool-down, shared by every container through the table),
``tokens`` (the per-container token cache and the one refresh a 401 forces), ``settings`` and
``proxy`` (the call itself: retries, ``requestid``, ``minorversion``, the answer's shape).
"""
