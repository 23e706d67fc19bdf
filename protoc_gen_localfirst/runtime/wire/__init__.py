"""Sans-IO gRPC over HTTP/3: message framing, headers, status and timeouts.

No sockets, no asyncio, no QUIC library: bytes and header lists in, events out.
"""
