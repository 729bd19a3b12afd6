"""Identity and ACLs: who is calling, and whether Saxml's ACLs let them.

- `directory`: tokens -> principals -> groups, from the cell's ``config.json`` (tokens stored as
  SHA-256 digests only); `Directory` is one immutable snapshot of it.
- `source`: `AuthSource`, the live snapshot, re-read while the admin and model servers run, so a
  revoked token stops working within seconds.
- `acl`: the pure decisions (`Access`): the cell admin ACL on publish and join, a model's admin
  ACL on update and unpublish, a data ACL per method. 401 UNAUTHENTICATED, 403 PERMISSION_DENIED.
- `http`: the ``Authorization: Bearer`` scheme both apps declare in their OpenAPI specs.
- `startup`: whether a server may start on its bind address with the credentials it has.
"""
