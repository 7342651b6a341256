"""Immutable, versioned snapshots of Envoy resources, one per proxy group, and who watches them."""
