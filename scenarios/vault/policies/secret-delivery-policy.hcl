# The external-secret mode's delivery agent (bao agent, like ESO's SecretStore
# role): reads the gateway's credentials from the gateway-credentials KV v2
# mount (scenarios/modes/external-secret.yaml `gateway.externalSecret.path`),
# nothing else.
path "gateway-credentials/data/*" {
  capabilities = ["read"]
}
