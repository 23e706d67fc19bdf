"""Sans-IO tests of runtime.wire (no sockets)."""
