"""Authenticates with the Databricks SDK for Python configured only by the environment (the keys of a Secret
published by the operator) and proves the token is accepted: the principal is not an account admin, so the
account API answers PermissionDenied (403), not Unauthenticated (401)."""
from databricks.sdk import AccountClient
from databricks.sdk.errors import PermissionDenied

a = AccountClient()
assert a.config.auth_type == "oauth-m2m", a.config.auth_type
try:
    list(a.service_principals.list())
    print("authenticated: admin")
except PermissionDenied:
    print("authenticated: not an account admin")
