"""gRPC over HTTP/3 (QUIC): the client channel and the server, on top of ``wire``."""
