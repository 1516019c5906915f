// Command conformance drives the Databricks emulator with the official Databricks SDK for Go: every account
// operation the operator uses, each result read back, as tests/python/sdk_conformance.py does with the Python SDK.
// Prints one line per check and "OK <n> checks"; any failure exits non-zero with what failed.
//
// Environment: EMU_HOST, EMU_ACCOUNT_ID, EMU_CLIENT_ID, EMU_CLIENT_SECRET, EMU_WORKSPACE_ID.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/oauth2"
)

var checks int

func check(ok bool, what string) {
	if !ok {
		fmt.Fprintln(os.Stderr, "FAILED -", what)
		os.Exit(1)
	}
	checks++
	fmt.Println("ok -", what)
}

func must[T any](value T, err error) T {
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAILED -", err)
		os.Exit(1)
	}
	return value
}

func mustDo(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAILED -", err)
		os.Exit(1)
	}
}

func client(clientID, clientSecret string) *databricks.AccountClient {
	return must(databricks.NewAccountClient(&databricks.Config{
		Host:         os.Getenv("EMU_HOST"),
		AccountID:    os.Getenv("EMU_ACCOUNT_ID"),
		ClientID:     clientID,
		ClientSecret: clientSecret,
		AuthType:     "oauth-m2m",
	}))
}

func main() {
	ctx := context.Background()
	account := os.Getenv("EMU_ACCOUNT_ID")
	workspace := must(strconv.ParseInt(os.Getenv("EMU_WORKSPACE_ID"), 10, 64))
	a := client(os.Getenv("EMU_CLIENT_ID"), os.Getenv("EMU_CLIENT_SECRET"))

	// Service principals (SCIM). The Terraform provider's account-level body carries "entitlements":[{}].
	sp := must(a.ServicePrincipals.Create(ctx, iam.ServicePrincipal{DisplayName: "go-sp", ExternalId: "uid-go-1", Active: true}))
	check(sp.Id != "" && sp.ApplicationId != "", "create service principal returns id and applicationId")
	got := must(a.ServicePrincipals.GetById(ctx, sp.Id))
	check(got.DisplayName == "go-sp" && got.ExternalId == "uid-go-1" && got.Active, "get reads back what was created")
	twin := must(a.ServicePrincipals.Create(ctx, iam.ServicePrincipal{DisplayName: "go-sp"}))
	named := must(a.ServicePrincipals.ListAll(ctx, iam.ListAccountServicePrincipalsRequest{Filter: `displayName eq "go-sp"`}))
	ids := []string{}
	for _, s := range named {
		ids = append(ids, s.Id)
	}
	sort.Strings(ids)
	want := []string{sp.Id, twin.Id}
	sort.Strings(want)
	check(fmt.Sprint(ids) == fmt.Sprint(want), "display names are not unique; list by filter finds both")
	byExt := must(a.ServicePrincipals.ListAll(ctx, iam.ListAccountServicePrincipalsRequest{Filter: `externalId eq "uid-go-1"`}))
	check(len(byExt) == 1 && byExt[0].Id == sp.Id, "list by externalId finds exactly the tagged principal")
	mustDo(a.ServicePrincipals.Patch(ctx, iam.PartialUpdate{
		Id:         sp.Id,
		Operations: []iam.Patch{{Op: iam.PatchOpReplace, Path: "active", Value: false}},
		Schemas:    []iam.PatchSchema{iam.PatchSchemaUrnIetfParamsScimApiMessages20PatchOp},
	}))
	check(!must(a.ServicePrincipals.GetById(ctx, sp.Id)).Active, "patch active=false deactivates")
	mustDo(a.ServicePrincipals.Update(ctx, iam.ServicePrincipal{Id: sp.Id, DisplayName: "go-sp-renamed", ExternalId: "uid-go-1", Active: true}))
	got = must(a.ServicePrincipals.GetById(ctx, sp.Id))
	check(got.DisplayName == "go-sp-renamed" && got.Active, "update (PUT) replaces the principal")

	// OAuth secrets.
	created := must(a.ServicePrincipalSecrets.Create(ctx, oauth2.CreateServicePrincipalSecretRequest{ServicePrincipalId: sp.Id, Lifetime: "3600s"}))
	check(created.Id != "" && created.Secret != "" && created.ExpireTime != "", "create secret shows the value once, with its expiry")
	listed := must(a.ServicePrincipalSecrets.ListAll(ctx, oauth2.ListServicePrincipalSecretsRequest{ServicePrincipalId: sp.Id}))
	check(len(listed) == 1 && listed[0].Id == created.Id, "list secrets returns the id")

	// Federation policies on the principal.
	policy := oauth2.FederationPolicy{Description: "ci", OidcPolicy: &oauth2.OidcFederationPolicy{
		Issuer: "https://token.actions.githubusercontent.com", Audiences: []string{account}, Subject: "repo:org/repo:ref:refs/heads/main"}}
	spID := must(strconv.ParseInt(sp.Id, 10, 64))
	made := must(a.ServicePrincipalFederationPolicy.Create(ctx, oauth2.CreateServicePrincipalFederationPolicyRequest{
		ServicePrincipalId: spID, Policy: policy, PolicyId: "go-policy"}))
	check(made.PolicyId == "go-policy" && made.Uid != "" && made.ServicePrincipalId == spID, "create federation policy")
	fetched := must(a.ServicePrincipalFederationPolicy.GetByServicePrincipalIdAndPolicyId(ctx, spID, "go-policy"))
	check(fetched.OidcPolicy != nil && fetched.OidcPolicy.Subject == "repo:org/repo:ref:refs/heads/main", "get federation policy reads back the subject")
	must(a.ServicePrincipalFederationPolicy.Update(ctx, oauth2.UpdateServicePrincipalFederationPolicyRequest{
		ServicePrincipalId: spID, PolicyId: "go-policy", Policy: oauth2.FederationPolicy{Description: "changed"}, UpdateMask: "description"}))
	fetched = must(a.ServicePrincipalFederationPolicy.GetByServicePrincipalIdAndPolicyId(ctx, spID, "go-policy"))
	check(fetched.Description == "changed" && fetched.OidcPolicy != nil && fetched.OidcPolicy.Issuer != "", "update_mask changes only the named field")
	policies := must(a.ServicePrincipalFederationPolicy.ListAll(ctx, oauth2.ListServicePrincipalFederationPoliciesRequest{ServicePrincipalId: spID}))
	check(len(policies) == 1 && policies[0].PolicyId == "go-policy", "list federation policies")
	mustDo(a.ServicePrincipalFederationPolicy.DeleteByServicePrincipalIdAndPolicyId(ctx, spID, "go-policy"))
	_, err := a.ServicePrincipalFederationPolicy.GetByServicePrincipalIdAndPolicyId(ctx, spID, "go-policy")
	check(errors.Is(err, databricks.ErrNotFound), "deleted policy is gone (NotFound)")

	// Workspace assignments.
	must(a.WorkspaceAssignment.Update(ctx, iam.UpdateWorkspaceAssignments{WorkspaceId: workspace, PrincipalId: spID,
		Permissions: []iam.WorkspacePermission{iam.WorkspacePermissionUser}}))
	assigned := func() []iam.WorkspacePermission {
		for _, p := range must(a.WorkspaceAssignment.ListAll(ctx, iam.ListWorkspaceAssignmentRequest{WorkspaceId: workspace})) {
			if p.Principal != nil && p.Principal.PrincipalId == spID {
				return p.Permissions
			}
		}
		return nil
	}
	check(fmt.Sprint(assigned()) == "[USER]", "assign USER and list it")
	must(a.WorkspaceAssignment.Update(ctx, iam.UpdateWorkspaceAssignments{WorkspaceId: workspace, PrincipalId: spID,
		Permissions: []iam.WorkspacePermission{iam.WorkspacePermissionAdmin}}))
	check(fmt.Sprint(assigned()) == "[ADMIN]", "upsert to ADMIN")
	mustDo(a.WorkspaceAssignment.DeleteByWorkspaceIdAndPrincipalId(ctx, workspace, spID))
	check(assigned() == nil, "delete assignment")

	// Account groups: one member added and removed at a time; the principal lists its groups.
	group := must(a.Groups.Create(ctx, iam.Group{DisplayName: "go-team"}))
	check(group.Id != "", "create group")
	check(must(a.Groups.GetByDisplayName(ctx, "go-team")).Id == group.Id, "find a group by display name")
	patchOp := []iam.PatchSchema{iam.PatchSchemaUrnIetfParamsScimApiMessages20PatchOp}
	mustDo(a.Groups.Patch(ctx, iam.PartialUpdate{Id: group.Id, Schemas: patchOp, Operations: []iam.Patch{
		{Op: iam.PatchOpAdd, Path: "members", Value: []iam.ComplexValue{{Value: sp.Id}}}}}))
	members := must(a.Groups.GetById(ctx, group.Id)).Members
	check(len(members) == 1 && members[0].Value == sp.Id, "add a member")
	groups := must(a.ServicePrincipals.GetById(ctx, sp.Id)).Groups
	check(len(groups) == 1 && groups[0].Display == "go-team", "a principal lists its groups")
	mustDo(a.Groups.Patch(ctx, iam.PartialUpdate{Id: group.Id, Schemas: patchOp, Operations: []iam.Patch{
		{Op: iam.PatchOpRemove, Path: fmt.Sprintf("members[value eq \"%s\"]", sp.Id)}}}))
	check(len(must(a.Groups.GetById(ctx, group.Id)).Members) == 0, "remove a member")

	// The principal's rule set: replaced with the etag it was read at; a stale etag is refused.
	ruleSet := fmt.Sprintf("accounts/%s/servicePrincipals/%s/ruleSets/default", account, sp.ApplicationId)
	current := must(a.AccessControl.GetRuleSet(ctx, iam.GetRuleSetRequest{Name: ruleSet, Etag: ""}))
	check(current.Etag != "", "read a principal's rule set with its etag")
	rules := append(current.GrantRules, iam.GrantRule{Role: "roles/servicePrincipal.user", Principals: []string{"groups/go-team"}})
	written := must(a.AccessControl.UpdateRuleSet(ctx, iam.UpdateRuleSetRequest{Name: ruleSet,
		RuleSet: iam.RuleSetUpdateRequest{Name: ruleSet, Etag: current.Etag, GrantRules: rules}}))
	check(written.Etag != current.Etag && len(written.GrantRules) == len(rules), "update a rule set with the etag read")
	_, err = a.AccessControl.UpdateRuleSet(ctx, iam.UpdateRuleSetRequest{Name: ruleSet,
		RuleSet: iam.RuleSetUpdateRequest{Name: ruleSet, Etag: current.Etag}})
	check(errors.Is(err, databricks.ErrResourceConflict), "a stale etag is refused (RESOURCE_CONFLICT)")
	mustDo(a.Groups.DeleteById(ctx, group.Id))

	// Custom app integrations.
	app := must(a.CustomAppIntegration.Create(ctx, oauth2.CreateCustomAppIntegration{
		Name: "go-app", RedirectUrls: []string{"https://app.example.com/cb"}, Confidential: true,
		Scopes:            []string{"all-apis", "offline_access"},
		TokenAccessPolicy: &oauth2.TokenAccessPolicy{AccessTokenTtlInMinutes: 30, RefreshTokenTtlInMinutes: 600}}))
	check(app.IntegrationId != "" && app.ClientId != "" && app.ClientSecret != "", "confidential app shows its secret on create")
	read := must(a.CustomAppIntegration.GetByIntegrationId(ctx, app.IntegrationId))
	check(read.Name == "go-app" && read.Confidential && read.TokenAccessPolicy != nil && read.TokenAccessPolicy.AccessTokenTtlInMinutes == 30,
		"get app reads back the integration")
	mustDo(a.CustomAppIntegration.Update(ctx, oauth2.UpdateCustomAppIntegration{IntegrationId: app.IntegrationId, RedirectUrls: []string{"https://app.example.com/cb2"}}))
	read = must(a.CustomAppIntegration.GetByIntegrationId(ctx, app.IntegrationId))
	check(fmt.Sprint(read.RedirectUrls) == "[https://app.example.com/cb2]", "update replaces redirect URLs")
	public := must(a.CustomAppIntegration.Create(ctx, oauth2.CreateCustomAppIntegration{
		Name: "go-public", RedirectUrls: []string{"http://localhost:8020"}, Confidential: false, Scopes: []string{"sql"}}))
	check(public.ClientSecret == "", "public app has no secret")
	apps := must(a.CustomAppIntegration.ListAll(ctx, oauth2.ListCustomAppIntegrationsRequest{}))
	found := map[string]bool{}
	for _, x := range apps {
		found[x.IntegrationId] = true
	}
	check(len(found) == 2 && found[app.IntegrationId] && found[public.IntegrationId], "list apps")
	mustDo(a.CustomAppIntegration.DeleteByIntegrationId(ctx, app.IntegrationId))
	mustDo(a.CustomAppIntegration.DeleteByIntegrationId(ctx, public.IntegrationId))
	_, err = a.CustomAppIntegration.GetByIntegrationId(ctx, app.IntegrationId)
	check(errors.Is(err, databricks.ErrNotFound), "deleted app is gone (NotFound)")

	// The new secret authenticates the SDK as the principal; once deleted it no longer does.
	asSP := client(sp.ApplicationId, created.Secret)
	_, err = asSP.ServicePrincipals.GetById(ctx, sp.Id)
	check(errors.Is(err, databricks.ErrPermissionDenied), "the new secret authenticates (a principal without account admin: PermissionDenied)")
	mustDo(a.ServicePrincipalSecrets.Delete(ctx, oauth2.DeleteServicePrincipalSecretRequest{ServicePrincipalId: sp.Id, SecretId: created.Id}))
	check(len(must(a.ServicePrincipalSecrets.ListAll(ctx, oauth2.ListServicePrincipalSecretsRequest{ServicePrincipalId: sp.Id}))) == 0, "delete secret")
	_, err = client(sp.ApplicationId, created.Secret).ServicePrincipals.GetById(ctx, sp.Id)
	check(err != nil && !errors.Is(err, databricks.ErrPermissionDenied), "a deleted secret no longer authenticates")

	// Clean up.
	mustDo(a.ServicePrincipals.DeleteById(ctx, sp.Id))
	mustDo(a.ServicePrincipals.DeleteById(ctx, twin.Id))
	_, err = a.ServicePrincipals.GetById(ctx, sp.Id)
	check(errors.Is(err, databricks.ErrNotFound), "deleted principal is gone (NotFound)")
	fmt.Printf("OK %d checks\n", checks)
}
