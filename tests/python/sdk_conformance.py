"""Drives the emulator with the official Databricks SDK for Python: every account operation the operator uses,
each result read back. Prints one line per check and `OK <n> checks`; any failure raises (non-zero exit).

Environment: EMU_HOST, EMU_ACCOUNT_ID, EMU_CLIENT_ID, EMU_CLIENT_SECRET, EMU_WORKSPACE_ID, EMU_MODE.
"""
import os
import sys

from databricks.sdk import AccountClient
from databricks.sdk.config import Config
from databricks.sdk.errors import NotFound, PermissionDenied, ResourceConflict
from databricks.sdk.service import iam, oauth2

HOST = os.environ["EMU_HOST"]
ACCOUNT = os.environ["EMU_ACCOUNT_ID"]
WORKSPACE = int(os.environ["EMU_WORKSPACE_ID"])
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1
    print("ok -", what)


def client(client_id, client_secret):
    return AccountClient(host=HOST, account_id=ACCOUNT, client_id=client_id, client_secret=client_secret,
                         auth_type="oauth-m2m")


def operations():
    a = client(os.environ["EMU_CLIENT_ID"], os.environ["EMU_CLIENT_SECRET"])

    # Service principals (SCIM).
    sp = a.service_principals.create(display_name="sdk-sp", external_id="uid-sdk-1", active=True)
    check(sp.id and sp.application_id, "create service principal returns id and applicationId")
    got = a.service_principals.get(sp.id)
    check(got.display_name == "sdk-sp" and got.external_id == "uid-sdk-1" and got.active, "get reads back what was created")
    twin = a.service_principals.create(display_name="sdk-sp")
    named = list(a.service_principals.list(filter='displayName eq "sdk-sp"'))
    check({s.id for s in named} == {sp.id, twin.id}, "display names are not unique; list by filter finds both")
    by_ext = list(a.service_principals.list(filter='externalId eq "uid-sdk-1"'))
    check([s.id for s in by_ext] == [sp.id], "list by externalId finds exactly the tagged principal")
    # The SDK drops falsy patch values (`if self.value:`), so `value=False` would arrive without a value; send the
    # ComplexValue form Terraform uses.
    a.service_principals.patch(sp.id, operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value=[{"value": "false"}])],
                               schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP])
    check(a.service_principals.get(sp.id).active is False, "patch deactivates")
    a.service_principals.update(sp.id, display_name="sdk-sp-renamed", active=True, external_id="uid-sdk-1")
    got = a.service_principals.get(sp.id)
    check(got.display_name == "sdk-sp-renamed" and got.active, "update (PUT) replaces display name and active")
    everyone = list(a.service_principals.list())
    check(len(everyone) == 3, f"list pages through all principals ({len(everyone)})")

    # OAuth secrets.
    created = a.service_principal_secrets.create(service_principal_id=sp.id, lifetime="3600s")
    check(created.secret and created.id and created.expire_time, "create secret shows the value once, with expiry")
    listed = list(a.service_principal_secrets.list(service_principal_id=sp.id))
    check([s.id for s in listed] == [created.id] and all(not getattr(s, "secret", None) for s in listed),
          "list secrets returns the id and never the value")

    # Federation policies.
    policy = oauth2.FederationPolicy(description="ci", oidc_policy=oauth2.OidcFederationPolicy(
        issuer="https://token.actions.githubusercontent.com", audiences=[ACCOUNT], subject="repo:org/repo:ref:refs/heads/main"))
    made = a.service_principal_federation_policy.create(service_principal_id=int(sp.id), policy=policy, policy_id="sdk-policy")
    check(made.policy_id == "sdk-policy" and made.uid and made.service_principal_id == int(sp.id), "create federation policy")
    got = a.service_principal_federation_policy.get(service_principal_id=int(sp.id), policy_id="sdk-policy")
    check(got.oidc_policy.subject == "repo:org/repo:ref:refs/heads/main", "get federation policy reads back the subject")
    a.service_principal_federation_policy.update(service_principal_id=int(sp.id), policy_id="sdk-policy",
                                                 policy=oauth2.FederationPolicy(description="changed"), update_mask="description")
    got = a.service_principal_federation_policy.get(service_principal_id=int(sp.id), policy_id="sdk-policy")
    check(got.description == "changed" and got.oidc_policy.issuer.startswith("https://"), "update_mask changes only the named field")
    check([p.policy_id for p in a.service_principal_federation_policy.list(service_principal_id=int(sp.id))] == ["sdk-policy"],
          "list federation policies")
    a.service_principal_federation_policy.delete(service_principal_id=int(sp.id), policy_id="sdk-policy")
    try:
        a.service_principal_federation_policy.get(service_principal_id=int(sp.id), policy_id="sdk-policy")
        check(False, "deleted policy is gone")
    except NotFound:
        check(True, "deleted policy is gone (NotFound)")

    # Workspace assignments.
    a.workspace_assignment.update(workspace_id=WORKSPACE, principal_id=int(sp.id), permissions=[iam.WorkspacePermission.USER])
    found = [p for p in a.workspace_assignment.list(workspace_id=WORKSPACE) if p.principal.principal_id == int(sp.id)]
    check(len(found) == 1 and found[0].permissions == [iam.WorkspacePermission.USER], "assign USER and list it")
    a.workspace_assignment.update(workspace_id=WORKSPACE, principal_id=int(sp.id), permissions=[iam.WorkspacePermission.ADMIN])
    found = [p for p in a.workspace_assignment.list(workspace_id=WORKSPACE) if p.principal.principal_id == int(sp.id)]
    check(found[0].permissions == [iam.WorkspacePermission.ADMIN], "upsert to ADMIN")
    a.workspace_assignment.delete(workspace_id=WORKSPACE, principal_id=int(sp.id))
    found = [p for p in a.workspace_assignment.list(workspace_id=WORKSPACE) if p.principal.principal_id == int(sp.id)]
    check(found == [], "delete assignment")

    groups_and_rule_sets(a, sp)

    # Custom app integrations.
    tap = oauth2.TokenAccessPolicy(access_token_ttl_in_minutes=30, refresh_token_ttl_in_minutes=600)
    app = a.custom_app_integration.create(name="sdk-app", redirect_urls=["https://app.example.com/cb"], confidential=True,
                                          scopes=["all-apis", "offline_access"], token_access_policy=tap)
    check(app.integration_id and app.client_id and app.client_secret, "confidential app shows its secret on create")
    got = a.custom_app_integration.get(app.integration_id)
    check(got.name == "sdk-app" and got.confidential and got.token_access_policy.access_token_ttl_in_minutes == 30
          and not getattr(got, "client_secret", None), "get app reads back without the secret")
    a.custom_app_integration.update(app.integration_id, redirect_urls=["https://app.example.com/cb2"])
    check(a.custom_app_integration.get(app.integration_id).redirect_urls == ["https://app.example.com/cb2"],
          "update replaces redirect URLs")
    public = a.custom_app_integration.create(name="sdk-public", redirect_urls=["http://localhost:8020"], confidential=False,
                                             scopes=["sql"])
    check(public.client_secret is None, "public app has no secret")
    check({x.integration_id for x in a.custom_app_integration.list()} == {app.integration_id, public.integration_id},
          "list apps")
    a.custom_app_integration.delete(app.integration_id)
    a.custom_app_integration.delete(public.integration_id)
    try:
        a.custom_app_integration.get(app.integration_id)
        check(False, "deleted app is gone")
    except NotFound:
        check(True, "deleted app is gone (NotFound)")

    # Clean up.
    a.service_principal_secrets.delete(service_principal_id=sp.id, secret_id=created.id)
    check(list(a.service_principal_secrets.list(service_principal_id=sp.id)) == [], "delete secret")
    a.service_principals.delete(sp.id)
    a.service_principals.delete(twin.id)
    try:
        a.service_principals.get(sp.id)
        check(False, "deleted principal is gone")
    except NotFound:
        check(True, "deleted principal is gone (NotFound)")


def groups_and_rule_sets(a, sp):
    """Account groups (one member added and removed at a time) and a principal's rule set (read, replaced with its
    etag, a stale etag refused), as the operator uses them."""
    group = a.groups.create(display_name="sdk-team")
    check(group.id and group.display_name == "sdk-team", "create group")
    found = list(a.groups.list(filter='displayName eq "SDK-TEAM"'))
    check([g.id for g in found] == [group.id], "list groups by display name, without case")
    other = a.service_principals.create(display_name="sdk-other")
    add = lambda member: iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": member}])
    schemas = [iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP]
    a.groups.patch(group.id, operations=[add(sp.id)], schemas=schemas)
    a.groups.patch(group.id, operations=[add(other.id)], schemas=schemas)
    check({m.value for m in a.groups.get(group.id).members} == {sp.id, other.id}, "members are added one at a time")
    check([g.display for g in a.service_principals.get(sp.id).groups] == ["sdk-team"], "a principal lists its groups")
    remove = iam.Patch(op=iam.PatchOp.REMOVE, path=f'members[value eq "{sp.id}"]')
    a.groups.patch(group.id, operations=[remove], schemas=schemas)
    check([m.value for m in a.groups.get(group.id).members] == [other.id], "removing one member leaves the others")

    name = f"accounts/{ACCOUNT}/servicePrincipals/{sp.application_id}/ruleSets/default"
    read = a.access_control.get_rule_set(name=name, etag="")
    check(read.etag and any(r.role == "roles/servicePrincipal.manager" for r in read.grant_rules or []),
          "a principal's rule set names its creator as manager")
    rules = list(read.grant_rules or []) + [iam.GrantRule(role="roles/servicePrincipal.user", principals=["groups/sdk-team"])]
    written = a.access_control.update_rule_set(name=name, rule_set=iam.RuleSetUpdateRequest(name=name, etag=read.etag, grant_rules=rules))
    check(written.etag != read.etag and len(written.grant_rules) == 2, "update rule set with the etag read")
    try:
        a.access_control.update_rule_set(name=name, rule_set=iam.RuleSetUpdateRequest(name=name, etag=read.etag, grant_rules=[]))
        check(False, "a stale etag is refused")
    except ResourceConflict as err:
        check(err.error_code == "RESOURCE_CONFLICT", "a stale etag is refused (409 RESOURCE_CONFLICT)")
    a.groups.delete(group.id)
    a.service_principals.delete(other.id)


def new_secret_lifecycle():
    """A principal's new secret authenticates the SDK, and stops working once deleted."""
    a = client(os.environ["EMU_CLIENT_ID"], os.environ["EMU_CLIENT_SECRET"])
    sp = a.service_principals.create(display_name="sdk-admin-2", roles=[iam.ComplexValue(value="account_admin")])
    secret = a.service_principal_secrets.create(service_principal_id=sp.id, lifetime="600s")
    as_sp = client(sp.application_id, secret.secret)
    check(as_sp.service_principals.get(sp.id).application_id == sp.application_id, "the new secret authenticates the SDK")
    plain = a.service_principals.create(display_name="sdk-plain")
    plain_secret = a.service_principal_secrets.create(service_principal_id=plain.id)
    try:
        client(plain.application_id, plain_secret.secret).service_principals.get(plain.id)
        check(False, "a principal without account admin is refused")
    except PermissionDenied:
        check(True, "a principal without account admin is refused (PermissionDenied)")
    a.service_principal_secrets.delete(service_principal_id=sp.id, secret_id=secret.id)
    try:
        client(sp.application_id, secret.secret).service_principals.get(sp.id)
        check(False, "a deleted secret no longer authenticates")
    except Exception as err:  # the SDK reports the refused client credentials while configuring auth
        check("invalid_client" in str(err) or "Client authentication failed" in str(err),
              f"a deleted secret no longer authenticates ({type(err).__name__})")
    scoped_secrets(a, sp)
    a.service_principals.delete(sp.id)
    a.service_principals.delete(plain.id)


def scoped_secrets(a, sp):
    """A secret created with `scopes` is listed with them, mints tokens within them only, and such a token is
    refused by the account APIs (they take all-apis)."""
    scoped = a.service_principal_secrets.create(service_principal_id=sp.id, lifetime="600s", scopes=["sql"])
    listed = [s for s in a.service_principal_secrets.list(service_principal_id=sp.id) if s.id == scoped.id]
    check(len(listed) == 1 and listed[0].scopes == ["sql"], "a scoped secret is listed with its scopes")
    try:
        client(sp.application_id, scoped.secret).service_principals.get(sp.id)
        check(False, "a scoped secret refuses a request for all-apis")
    except Exception as err:  # refused while the SDK configures auth
        check("access_denied" in str(err) and "all-apis" in str(err),
              f"a scoped secret refuses a request for all-apis ({type(err).__name__})")
    narrow = AccountClient(config=Config(host=HOST, account_id=ACCOUNT, client_id=sp.application_id,
                                         client_secret=scoped.secret, auth_type="oauth-m2m", scopes=["sql"]))
    try:
        narrow.service_principals.get(sp.id)
        check(False, "a token of the secret's scopes cannot use the account APIs")
    except PermissionDenied as err:
        check("required scopes" in str(err), "a token of the secret's scopes cannot use the account APIs")
    a.service_principal_secrets.delete(service_principal_id=sp.id, secret_id=scoped.id)


if __name__ == "__main__":
    {"operations": operations, "secret": new_secret_lifecycle}[os.environ.get("EMU_MODE", "operations")]()
    print(f"OK {checks} checks")
    sys.exit(0)
