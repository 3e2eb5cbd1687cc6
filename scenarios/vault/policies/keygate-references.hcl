# keygate's secret references (upstream_headers in its config): read the
# upstream credential it forwards, nothing else of the app's secrets.
path "secret/data/keygate/upstream" {
  capabilities = ["read"]
}
