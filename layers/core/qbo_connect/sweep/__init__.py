"""Keeping connections alive: the due policy's sweep over the DueIndex and the worker that
refreshes each due connection under the lease."""
