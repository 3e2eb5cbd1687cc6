# External Secrets Operator: reads the gateway credentials it syncs into
# keyrig-gateway-credentials (KV v2 at secret/, logical path keyrig/gateway)
# and nothing else. Not even `list`: ESO asks for the one path by name.
path "secret/data/keyrig/gateway" {
  capabilities = ["read"]
}
