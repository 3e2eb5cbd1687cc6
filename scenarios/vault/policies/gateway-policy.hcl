# Gateway: reads every group's keys, changes nothing.
path "{{ mount }}/data/*" {
  capabilities = ["read"]
}
path "{{ mount }}/metadata/*" {
  capabilities = ["list"]
}
