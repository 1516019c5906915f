-- Argo CD health check for every kind of oauth.databricks-operator.io (kstatus-style conditions).
-- Register it for each kind in argocd-cm (see argocd-cm.yaml beside this file).
local hs = {}
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see the latest change"
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.reason == "Paused" then
      hs.status = "Suspended"
    elseif condition.reason == "DatabricksThrottled" or condition.reason == "DatabricksUnavailable"
        or condition.reason == "ServicePrincipalNotReady" or condition.reason == "KubernetesError" then
      hs.status = "Progressing"
    else
      hs.status = "Degraded"
    end
    hs.message = condition.message
    return hs
  end
end
hs.status = "Progressing"
hs.message = "No Ready condition yet"
return hs
