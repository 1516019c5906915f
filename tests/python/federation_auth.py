"""Authenticates with the Databricks SDK for Python configured only by a TrustPolicy's ConfigMap (as environment)
and a ServiceAccount token file: no secret. The principal is not an account admin, so the account API answers
PermissionDenied (403, authenticated), not Unauthenticated."""
from databricks.sdk import AccountClient
from databricks.sdk.errors import PermissionDenied

a = AccountClient()
assert a.config.auth_type == "file-oidc", a.config.auth_type
try:
    list(a.service_principals.list())
    print("authenticated: admin")
except PermissionDenied:
    print("authenticated: not an account admin")
