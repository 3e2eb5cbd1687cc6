# One environment of an app: read its own secrets, nothing else.
path "{{ mount }}/data/{{ app }}/{{ environment }}/*" {
  capabilities = ["read"]
}
path "{{ mount }}/metadata/{{ app }}/{{ environment }}/*" {
  capabilities = ["list"]
}
