"""The composition root: the only code that builds AWS clients, the Intuit client, the store
repositories and the services. Handlers import from here; nothing else does."""
