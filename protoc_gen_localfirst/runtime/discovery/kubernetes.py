"""``kubernetes:///SERVICE[.NAMESPACE]:PORT``: endpoints from a watch on the service's EndpointSlices.

The source lists ``discovery.k8s.io/v1`` EndpointSlices labelled
``kubernetes.io/service-name=SERVICE`` and then watches them from the list's
resourceVersion (with bookmarks), the way client-go's reflector does:

- all slices of the service are merged (keyed by slice name); one
  :class:`Endpoint` per address, deduplicated across slices (a ready copy
  wins); ``ready`` is the slice's ``conditions.ready`` (nil counts as ready,
  as the API reference says) and not ``terminating``;
- the merged set goes to the listener after the first list (an empty set too)
  and whenever an event changes it; bookmarks only move the resourceVersion;
- a watch that the server ends (``timeoutSeconds``) is resumed from the last
  resourceVersion without a new list; ``410 Gone`` (an ERROR event or an HTTP
  410) means that version left the server's window: list again;
- other failures (refused or dropped connection, 5xx, read timeout) keep the
  last known set, set ``last_error`` and retry with jittered exponential
  backoff from ``reconnect_initial`` to ``reconnect_max``; one warning per
  outage, one info line on recovery;
- 403 (RBAC) produces a message naming the verbs and resource the service
  account needs.

Fallback (``KubernetesOptions.fallback_target``): the fallback source is
started when the API answers 403, when the kubeconfig / in-cluster config
cannot be loaded, or when the API cannot be reached before the first
successful list (with no list yet there is nothing better to offer). Once the
source has a list, later outages keep the last known set instead: a watch
that was right a minute ago beats a DNS answer without node names. While the
fallback runs, the source keeps retrying the API (with backoff, at most every
``reconnect_max``) and switches back to EndpointSlices after a successful
list, closing the fallback.

The watch runs in a daemon thread. :meth:`KubernetesSource.close` shuts the
watch socket down so the thread stops at once; no listener call happens after
``close`` returns.
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint, Target, TargetError
from protoc_gen_localfirst.runtime.discovery.source import (
    DiscoveryError,
    DnsOptions,
    EndpointSource,
    KubernetesOptions,
    Listener,
)

log = logging.getLogger("protoc_gen_localfirst.discovery.kubernetes")

KUBERNETES_FORMAT = "kubernetes:///SERVICE.NAMESPACE:PORT or kubernetes:///SERVICE:PORT"
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
"""Where a pod finds its own namespace (used when the target names none)."""
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
RESOURCE = "endpointslices.discovery.k8s.io"
_FORBIDDEN_VERB_RE = re.compile(r"cannot (\w+) resource")

# RFC 1035 label (Service names) and RFC 1123 label (namespaces).
_SERVICE_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# IANA_SVC_NAME: the rule for named ports.
_PORT_NAME_RE = re.compile(r"(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")


def parse_kubernetes_target(
    target: Target, *, namespace_file: str = NAMESPACE_FILE
) -> tuple[str, str, int | str]:
    """(service, namespace, port) of a ``kubernetes:///`` target; port is a number or a name."""
    where = f"target {target.text!r}"
    if target.authority:
        raise TargetError(
            f"{where}: kubernetes targets take no authority (the API server comes from "
            f"the kubeconfig or the pod); use {KUBERNETES_FORMAT}"
        )
    name, colon, port_text = target.path.rpartition(":")
    if not colon or not name or not port_text:
        raise TargetError(f"{where} has no port; use {KUBERNETES_FORMAT}")
    port: int | str
    if port_text.isdigit():
        port = int(port_text)
        if not 0 < port < 65536:
            raise TargetError(f"{where}: port {port_text} is not in 1-65535")
    elif _PORT_NAME_RE.fullmatch(port_text):
        port = port_text
    else:
        raise TargetError(
            f"{where}: port {port_text!r} is neither a number nor a port name "
            "(lowercase letters, digits and '-', at most 15)"
        )
    service, dot, namespace = name.partition(".")
    if not _SERVICE_RE.fullmatch(service):
        raise TargetError(
            f"{where}: {service!r} is not a Service name (lowercase RFC 1035 label); "
            f"use {KUBERNETES_FORMAT}"
        )
    if dot:
        if not _NAMESPACE_RE.fullmatch(namespace):
            raise TargetError(
                f"{where}: {namespace!r} is not a namespace name (lowercase RFC 1123 label); "
                f"use {KUBERNETES_FORMAT} (not the cluster DNS name)"
            )
    else:
        namespace = _own_namespace(namespace_file)
    return service, namespace, port


def _own_namespace(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            namespace = f.read().strip()
    except OSError:
        return "default"
    return namespace or "default"


def slice_endpoints(obj: dict[str, Any], port: int | str) -> list[Endpoint]:
    """The endpoints of one EndpointSlice (raw JSON) for ``port`` (a number or a port name).

    A numeric port is used as is; a named port is looked up in the slice's
    ``ports`` (a slice without that name contributes nothing).
    """
    if isinstance(port, str):
        numbers = [
            int(p["port"])
            for p in obj.get("ports") or []
            if isinstance(p, dict) and p.get("name") == port and isinstance(p.get("port"), int)
        ]
        if not numbers:
            return []
        number = numbers[0]
    else:
        number = port
    found: list[Endpoint] = []
    for item in obj.get("endpoints") or []:
        if not isinstance(item, dict):
            continue
        conditions = item.get("conditions") or {}
        # nil ready = unknown = ready; nil terminating = not terminating (API reference).
        ready = conditions.get("ready") is not False and conditions.get("terminating") is not True
        node = item.get("nodeName") or None
        zone = item.get("zone") or None
        for address in item.get("addresses") or []:
            if isinstance(address, str) and address:
                found.append(Endpoint(host=address, port=number, node=node, zone=zone, ready=ready))
    return found


def merge_slices(slices: dict[str, list[Endpoint]]) -> list[Endpoint]:
    """One endpoint per address across all slices (slice name order); a ready copy wins."""
    merged: dict[tuple[str, int], Endpoint] = {}
    for name in sorted(slices):
        for endpoint in slices[name]:
            key = (endpoint.host, endpoint.port)
            known = merged.get(key)
            if known is None or (endpoint.ready and not known.ready):
                merged[key] = endpoint
    return list(merged.values())


class _Gone(Exception):
    """The watched resourceVersion left the server's window: list again."""


class _Closed(Exception):
    """close() was called while the thread was in I/O."""


def _import_kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError as exc:
        raise DiscoveryError(
            "kubernetes:/// targets need the kubernetes client: "
            "pip install protoc-gen-localfirst[kubernetes]"
        ) from exc
    return kubernetes


def _status_message(exc: Exception) -> tuple[int, str]:
    """(HTTP status, message) of an ApiException, from its Status body when there is one."""
    status = getattr(exc, "status", 0) or 0
    body = getattr(exc, "body", None)
    message = str(getattr(exc, "reason", "") or exc)
    if isinstance(body, (bytes, str)) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("message"):
            message = str(parsed["message"])
    return int(status), message


class KubernetesSource(EndpointSource):
    """Watches the EndpointSlices of one Service and pushes the merged endpoint set.

    ``watch_timeout`` is the server-side ``timeoutSeconds`` of one watch
    request (jittered up to twice that, like client-go). ``idle_timeout``
    bounds the silence on an open watch (no event, no bookmark) before the
    source re-watches, so a half-dead connection is noticed; a re-watch from
    the last resourceVersion is cheap. ``request_timeout`` bounds connects and
    lists. Tests shorten them; the defaults suit a real cluster.
    """

    def __init__(
        self,
        target: Target,
        options: KubernetesOptions,
        *,
        dns: DnsOptions,
        watch_timeout: int = 300,
        idle_timeout: float = 90.0,
        request_timeout: float = 10.0,
        namespace_file: str = NAMESPACE_FILE,
        make_fallback: Callable[[str], EndpointSource] | None = None,
    ) -> None:
        super().__init__(target)
        # Given by ``discovery.make_source`` (itself): this module does not import the
        # factory that imports it.
        self._make_fallback = make_fallback
        if options.fallback_target is not None and make_fallback is None:
            raise DiscoveryError(
                f"{target.text}: fallback_target needs make_fallback"
                " (discovery.make_source passes it)"
            )
        self.service, self.namespace, self.port = parse_kubernetes_target(
            target, namespace_file=namespace_file
        )
        self.options = options
        self.server_name = f"{self.service}.{self.namespace}.svc.{options.cluster_domain}"
        self._dns = dns
        self._watch_timeout = max(1, int(watch_timeout))
        self._request_timeout = request_timeout
        self._idle_timeout = idle_timeout
        self._k8s = _import_kubernetes()
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._slices: dict[str, list[Endpoint]] = {}
        self._pushed: list[Endpoint] | None = None
        self._fallback: EndpointSource | None = None
        self._outage = False
        self._listed_once = False
        self._streaming = False
        """The current or last watch request got its 200 answer."""
        self._free_retry = True
        self.resource_version: str | None = None
        """The last resourceVersion seen (list, event or bookmark); None before the first list."""
        self._api: Any = None
        self._api_client: Any = None
        self._config_error: str | None = None
        try:
            self._api_client = self._new_api_client()
        except Exception as exc:
            self._config_error = f"{self.target.text}: cannot load Kubernetes config: {exc}"
            if options.fallback_target is None:
                raise DiscoveryError(
                    f"{self._config_error} (set KubernetesOptions.kubeconfig outside a pod, "
                    "or fallback_target)"
                ) from exc
        else:
            self._api = self._k8s.client.DiscoveryV1Api(self._api_client)

    def _new_api_client(self) -> Any:
        config = self._k8s.config
        configuration = self._k8s.client.Configuration()
        # No urllib3-level retries: this source has its own backoff, and
        # urllib3 would log a warning per silent retry.
        configuration.retries = False
        if self.options.kubeconfig is None:
            config.load_incluster_config(client_configuration=configuration)
            return self._k8s.client.ApiClient(configuration)
        return config.new_client_from_config(
            config_file=self.options.kubeconfig,
            context=self.options.context,
            persist_config=False,
            client_configuration=configuration,
        )

    # -- EndpointSource --------------------------------------------------------

    def start(self, listener: Listener) -> None:
        with self._lock:
            if self._thread is not None or self._closed.is_set():
                raise RuntimeError(f"{self.target.text}: source already started or closed")
            self._listener = listener
            if self._config_error is not None:
                self.last_error = self._config_error
                log.warning("%s", self._config_error)
                self._start_fallback()
                return
            self._thread = threading.Thread(
                target=self._run, name=f"localfirst-kubernetes {self.target.text}", daemon=True
            )
            self._thread.start()

    def request_refresh(self, *, force: bool = False) -> None:
        fallback = self._fallback
        if fallback is not None:
            fallback.request_refresh(force=force)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            response = self._response
            fallback, self._fallback = self._fallback, None
        _shutdown_response(response)
        if fallback is not None:
            fallback.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

    # -- pushing ---------------------------------------------------------------

    def _push(self, endpoints: list[Endpoint]) -> None:
        """Give ``endpoints`` to the listener unless closed, on fallback, or unchanged."""
        with self._lock:
            if self._closed.is_set() or self._listener is None:
                raise _Closed
            if self._fallback is not None or endpoints == self._pushed:
                return
            self._pushed = endpoints
            self._listener(endpoints)

    def _push_merged(self) -> None:
        self._push(merge_slices(self._slices))

    def _start_fallback(self) -> None:
        """Switch to ``options.fallback_target`` (caller holds the lock)."""
        target = self.options.fallback_target
        if target is None or self._fallback is not None or self._closed.is_set():
            return
        log.warning("%s: using fallback %s instead of EndpointSlices", self.target.text, target)
        assert self._make_fallback is not None  # checked in __init__
        fallback = self._make_fallback(target)
        self._fallback = fallback
        self._pushed = None

        def forward(endpoints: Sequence[Endpoint]) -> None:
            with self._lock:
                if self._fallback is fallback and not self._closed.is_set() and self._listener:
                    self._listener(endpoints)

        fallback.start(forward)

    def _stop_fallback(self) -> bool:
        """Close the fallback if one runs; True if it did."""
        with self._lock:
            fallback, self._fallback = self._fallback, None
        if fallback is None:
            return False
        log.info(
            "%s: Kubernetes API answers again; leaving fallback %s",
            self.target.text,
            self.options.fallback_target,
        )
        fallback.close()
        return True

    # -- the watch thread ------------------------------------------------------

    def _run(self) -> None:
        delay = self.options.reconnect_initial
        self._free_retry = True
        try:
            while not self._closed.is_set():
                self._streaming = False
                try:
                    if self.resource_version is None:
                        self._list()
                    self._watch()
                    delay = self.options.reconnect_initial
                    self._free_retry = True
                except _Gone:
                    log.info("%s: resourceVersion expired (410); listing again", self.target.text)
                    self.resource_version = None
                except _Closed:
                    return
                except Exception as exc:  # noqa: BLE001 - every failure is an outage to ride out
                    if self._closed.is_set():
                        return
                    if getattr(exc, "status", None) == 410:
                        self.resource_version = None
                        continue
                    if self._streaming and _is_read_timeout(exc):
                        # A quiet watch (no event, no bookmark for idle_timeout):
                        # maybe a half-dead connection. Re-watch; if the server
                        # is really gone, the new connect fails and that counts.
                        log.debug("%s: watch idle; re-watching", self.target.text)
                        continue
                    if self._streaming and self._free_retry and not self._outage:
                        # An established watch broke (API server restart, idle
                        # cut by a load balancer): one immediate re-watch before
                        # this counts as an outage.
                        self._free_retry = False
                        log.debug("%s: watch dropped (%s); re-watching", self.target.text, exc)
                        continue
                    if self._streaming:
                        delay = self.options.reconnect_initial  # it was up a moment ago
                    self._failed(exc)
                    wait = random.uniform(delay / 2, delay)
                    delay = min(delay * 2, self.options.reconnect_max)
                    if self._closed.wait(wait):
                        return
        finally:
            with self._lock:
                self._response = None
            try:
                self._api_client.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("%s: closing the API client: %s", self.target.text, exc)

    def _failed(self, exc: Exception) -> None:
        status, message = _status_message(exc)
        if status == 403:
            verb = _FORBIDDEN_VERB_RE.search(message)
            text = (
                f"{self.target.text}: forbidden: serviceaccount cannot "
                f"{verb.group(1) if verb else 'list'} {RESOURCE} in "
                f"namespace {self.namespace} (RBAC needs get, list, watch on endpointslices "
                f"in API group discovery.k8s.io); API said: {message}"
            )
        elif status:
            text = f"{self.target.text}: Kubernetes API answered {status}: {message}"
        else:
            text = f"{self.target.text}: Kubernetes API unreachable: {type(exc).__name__}: {exc}"
        self.last_error = text
        with self._lock:
            if self._closed.is_set():
                return
            first = not self._outage
            self._outage = True
            if first:
                kept = (
                    ""
                    if not self._listed_once
                    else f"; keeping the last {len(self._pushed or [])} endpoints"
                )
                log.warning("%s%s", text, kept)
            else:
                log.debug("%s", text)
            if status == 403 or not self._listed_once:
                self._start_fallback()

    def _recovered(self) -> None:
        with self._lock:
            was_down = self._outage
            self._outage = False
        self.last_error = None
        if was_down:
            log.info("%s: Kubernetes API reachable again", self.target.text)
        if self._stop_fallback() and self._listed_once:
            self._push_merged()  # the listener had the fallback's set until now

    def _list(self) -> None:
        response = self._api.list_namespaced_endpoint_slice(
            self.namespace,
            label_selector=f"{SERVICE_NAME_LABEL}={self.service}",
            _preload_content=False,
            _request_timeout=(self._request_timeout, self._request_timeout),
        )
        body = json.loads(response.data)
        slices: dict[str, list[Endpoint]] = {}
        for item in body.get("items") or []:
            name = (item.get("metadata") or {}).get("name")
            if isinstance(name, str):
                slices[name] = slice_endpoints(item, self.port)
        self._slices = slices
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if not self.resource_version:
            raise ValueError("list answer has no metadata.resourceVersion")
        self._listed_once = True
        self._recovered()
        self._push_merged()

    def _watch(self) -> None:
        """One watch request from ``resource_version``; returns when the server ends it."""
        timeout = random.randint(self._watch_timeout, 2 * self._watch_timeout)
        self._streaming = False
        response = self._api.list_namespaced_endpoint_slice(
            self.namespace,
            label_selector=f"{SERVICE_NAME_LABEL}={self.service}",
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(self._request_timeout, min(self._idle_timeout, timeout + 5)),
        )
        with self._lock:
            if self._closed.is_set():
                _shutdown_response(response)
                raise _Closed
            self._response = response
        self._streaming = True
        try:
            self._recovered()
            for line in _lines(response):
                self._event(json.loads(line))
                self._free_retry = True
        finally:
            with self._lock:
                self._response = None
            response.release_conn()

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone
            raise _WatchError(int(code or 0), str(obj.get("message") or obj))
        metadata = obj.get("metadata") or {}
        version = metadata.get("resourceVersion")
        if kind == "BOOKMARK":
            if version:
                self.resource_version = str(version)
            return
        name = metadata.get("name")
        if kind in ("ADDED", "MODIFIED") and isinstance(name, str):
            self._slices[name] = slice_endpoints(obj, self.port)
        elif kind == "DELETED" and isinstance(name, str):
            self._slices.pop(name, None)
        else:
            log.debug("%s: ignoring watch event %r", self.target.text, kind)
        if version:
            self.resource_version = str(version)
        self._push_merged()


class _WatchError(Exception):
    """An ERROR event other than 410 (carries the Status code like an ApiException)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = message


def _lines(response: Any) -> Iterator[str]:
    """Newline-delimited JSON lines of a streaming (chunked) response."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if buffer.strip():
        yield buffer.decode("utf-8", errors="replace")


def _is_read_timeout(exc: Exception) -> bool:
    try:
        from urllib3.exceptions import ReadTimeoutError
    except ImportError:  # pragma: no cover - urllib3 comes with kubernetes
        return False
    return isinstance(exc, (ReadTimeoutError, TimeoutError))


def _shutdown_response(response: Any) -> None:
    """Unblock a thread reading ``response`` (an urllib3 response) by shutting its socket."""
    if response is None:
        return
    try:
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
