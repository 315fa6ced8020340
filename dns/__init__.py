"""MagicDNS: `.mesh` names answered in-process (imported as `gossipmesh.dns`)."""
