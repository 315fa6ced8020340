"""The network's signed default-deny policy and the stateful filter that enforces it (issue 17).

Sans-IO: text and packets in, decisions out; time comes in as `now`.

- `model`: the policy TOML parsed into a frozen `Policy` (selectors in `selectors`);
- `evaluate`: `CompiledPolicy`, the per-node decision for new flows;
- `filter`: `PacketFilter`, connection tracking with a bounded table and a
  one-look-up fast path (`packet`, `conntrack`, `states`, `tracker` behind it);
- `check`: running a policy's [[tests]]; `signed`: signing it and accepting it.
"""
