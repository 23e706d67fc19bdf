"""HTTP/3 server tests: real QUIC on loopback, real peers (buf curl, gtlsclient, qh3)."""
