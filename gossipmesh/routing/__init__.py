"""Link-state gossip, routing tables and relay decisions (sans-IO).

The node drives one `core.RoutingCore`; the other modules are its parts:

- `linkstate`: the signed LinkStateRecord and its canonical encoding;
- `store`: records held, de-duplicated by (origin, sequence), expiry;
- `messages`, `codec`: GOSSIP / PING / PONG payloads, size-bounded, versioned;
- `gossip`: anti-entropy (summary, digest, request, records) and flooding broadcast;
- `liveness`, `damping`: RTT and keepalives per neighbour, link flap damping;
- `table`: shortest paths over links both ends agree on, loop-free next hops;
- `relay`: RELAY envelopes and the forwarding decision;
- `seen`: bounded duplicate memory; `timing`: every timer in one place.

See docs/routing.md for formats, the bandwidth bound and the rules.
"""
