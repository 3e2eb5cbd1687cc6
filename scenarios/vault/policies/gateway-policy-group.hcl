# Gateway scoped to one API group ({{ group }}): the guide's alternative policy.
# Written once per group as gateway-policy-<groupId>.
path "{{ mount }}/data/{{ group }}*" {
  capabilities = ["read"]
}
path "{{ mount }}/metadata/{{ group }}*" {
  capabilities = ["list"]
}
