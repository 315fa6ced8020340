"""The network's signed default-deny policy and the stateful filter that enforces it (issue 17).

Sans-IO: text and packets in, decisions out; time comes in as `now`.
`model` parses the policy TOML into a frozen `Policy` (selectors in `selectors`).
"""
