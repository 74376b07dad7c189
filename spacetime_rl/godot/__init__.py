"""HTTP protocol v1: wire types and the async client for Godot (or the embedded simulator)."""
