"""gRPC over HTTP/3 (QUIC) for the client: a channel that behaves like grpc.aio's.

``H3Channel`` is what ``AsyncClient`` uses per endpoint when
``transport="h3"``; ``AutoChannel`` when ``transport="auto"``. Both offer
grpc.aio's multi-callables (``unary_unary`` ... ``stream_stream``) whose call
objects behave like grpc.aio's as far as the runtime (and most users) use
them: ``await call``, ``await call.initial_metadata()`` /
``trailing_metadata()`` / ``code()`` / ``details()``, ``await call.read()``
returning ``grpc.aio.EOF``, ``async for``, ``call.cancel()``; failures raise
``grpc.aio.AioRpcError``. So locality, failover, retries (commit detection by
response headers), deadlines and replay in ``client`` work unchanged.

The wire format (framing, headers, grpc-timeout, grpc-message, ``-bin``
metadata, status mapping) is ``wire``'s; the I/O is in the modules this one
gathers: ``channel`` (``H3Channel``, its multi-callables), ``client_call``
(``H3ClientCall``), ``connection`` (one QUIC connection), ``auto``
(``AutoChannel``, ``TransportMemory``) and ``options`` (``H3Options``,
``Transport``, importable without QUIC).

Behaviour (gRFC G2, as grpc-dotnet implements it):

* **Connection**: one QUIC connection per channel, opened lazily by the first
  call, shared by all calls (one request stream each), reopened lazily by the
  next call after it closed, idled out or the server sent GOAWAY. A failed
  handshake, an unreachable address or a connection lost under a call is
  UNAVAILABLE (never committed unless headers had arrived), so the runtime
  fails over. See ``connection`` for why the UDP socket is connected.
* **Deadlines**: ``timeout`` is sent as ``grpc-timeout`` and enforced locally;
  at expiry the stream is reset (RESET_STREAM + STOP_SENDING,
  H3_REQUEST_CANCELLED) and the call fails with DEADLINE_EXCEEDED.
  ``cancel()`` does the same with CANCELLED.
* **Request streams** are sent message by message as DATA frames; before each
  message the sender waits while more than ``SEND_HIGH_WATER`` bytes of the stream
  are still queued (QUIC flow/congestion control), so a fast producer never
  buffers without bound.
* **Message limits**, worded as grpc's: a request over
  ``grpc.max_send_message_length`` (default unlimited) fails with
  RESOURCE_EXHAUSTED ``CLIENT: Sent message larger than max (N vs. M)``; a
  single request is checked before connecting (the server never sees it),
  a streamed one when its message comes (the stream is reset). A server
  refusing a request over its limit answers at once (``SERVER: Received
  ...``) and sends STOP_SENDING; the client then resets the rest of its
  request (RFC 9000 3.5), so a refused stream closes on both sides and its
  stream credit comes back. Whenever the response ends before the request
  was all sent, the request side is reset with H3_NO_ERROR (RFC 9114 4.1).
* **Responses**: ``wire.MessageDecoder`` across DATA frames;
  ``max_receive_message_length`` (grpc's channel option, default 4 MiB) is
  checked on the length prefix: RESOURCE_EXHAUSTED (``CLIENT: Received
  message larger than max (N vs. M)``), stream reset. Trailers or
  trailers-only give the status; a stream that ends without ``grpc-status``
  maps its HTTP status; a reset by the server maps its HTTP/3 error code.
* **Unread responses**: qh3 2.x grants QUIC flow-control credit in its Rust
  core as it hands received data over (MAX_STREAM_DATA/MAX_DATA; Python can
  only size the windows), so a caller that reads a server stream slowly
  cannot slow the server down. A server-streaming call holds at most
  ``max(4 * max_receive_message_length, 16 MiB)`` of response messages
  unread (64 MiB without a receive limit), then fails with
  RESOURCE_EXHAUSTED (``... bytes of response messages not read``) and
  resets its stream: the server's rule for unread requests, from the other
  side. Pausing the UDP socket instead would stop the ACKs of every call on
  the connection. A reader that keeps up holds about one batch of datagrams.
* **Starting a call**: with the connection up and a stream free, a
  single-request call queues its headers and message at once (no task; they
  leave in the connection's next transmit); otherwise a task waits for the
  handshake or for stream credit (MAX_STREAMS; waiters are woken in order,
  one per stream the server lets us open).
* **TLS** is mandatory: the server certificate is verified against
  ``ca_file`` (else the system CAs) and the address dialled (IP SANs work);
  ``insecure_skip_verify=True`` turns verification off and logs a warning once.

Not supported (grpc.aio has them): ``write()``/``done_writing()`` on calls
without a request iterator, compression of requests, interceptors,
``wait_for_connection``.
"""

from protoc_gen_localfirst.runtime.http3.auto import AutoCall, AutoChannel, TransportMemory
from protoc_gen_localfirst.runtime.http3.channel import H3Channel, H3MultiCallable
from protoc_gen_localfirst.runtime.http3.client_call import NOT_SENT, USER_AGENT, H3ClientCall
from protoc_gen_localfirst.runtime.http3.options import H3Options, Transport

__all__ = [
    "NOT_SENT",
    "USER_AGENT",
    "AutoCall",
    "AutoChannel",
    "H3Channel",
    "H3ClientCall",
    "H3MultiCallable",
    "H3Options",
    "Transport",
    "TransportMemory",
]
