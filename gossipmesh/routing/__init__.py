"""Link-state gossip, routing tables and relay decisions (sans-IO)."""
