"""QuickBooks CorePlus usage: every call classed Core or CorePlus, metered per month, tenant,
realm, class and source without a DynamoDB write per call, and budgeted so no tenant can spend
the workspace's allowance for everyone (see docs/usage.md)."""
