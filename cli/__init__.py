"""The `gossipmesh` command line (imported as `gossipmesh.cli`)."""
