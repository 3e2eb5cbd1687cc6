# API portal: manages keys (create, read, update, delete, list) under the mount.
# From the Tanzu API-portal guide; {{ mount }} is the KV v2 mount holding keys.
path "{{ mount }}/data/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}
path "{{ mount }}/metadata/*" {
  capabilities = ["list", "delete"]
}
