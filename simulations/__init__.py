"""The virtual-time simulator (imported as `gossipmesh.simulations`)."""
