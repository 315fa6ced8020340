"""Trust without a server: what a network's offline authority key signs.

The authority is an Ed25519 key kept offline. It signs node certificates
(who a node is: its name, groups and permissions) and versioned documents
that every node gossips and keeps the newest of (the policy, the revocation
list). Nothing here does I/O beyond reading and writing the operator's files.
"""
