"""HTTP/3 tests: the client transport and the server, over real QUIC on loopback."""
