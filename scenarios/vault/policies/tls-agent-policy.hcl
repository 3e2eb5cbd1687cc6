# The TLS agent (bao agent rendering the gateway's serving certificate, see
# the `pki` section of setup.yaml): may issue certificates from the gateway's
# pki role and nothing else: no other role, no sign, no revoke, no CA change.
path "{{ pki.mount }}/issue/{{ pki.role.name }}" {
  capabilities = ["update"]
}
