"""The token vault: the refresh protocol, the get_token read path, sealing, the outbox,
the breaker, adoption of grants and health."""
