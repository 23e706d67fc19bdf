"""A stand-in kube-apiserver for EndpointSlices: list and watch, with the real semantics.

Serves ``GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`` over
plain HTTP/1.1 on 127.0.0.1 (stdlib ``ThreadingHTTPServer``):

- list: ``{"kind": "EndpointSliceList", "metadata": {"resourceVersion": N}, "items": [...]}``
  filtered by namespace and ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``);
- ``watch=true&resourceVersion=N``: chunked newline-delimited watch events
  (ADDED / MODIFIED / DELETED) with resourceVersion > N, BOOKMARK events every
  ``bookmark_interval`` when ``allowWatchBookmarks=true``, the stream ends
  cleanly after ``timeoutSeconds``; N older than the retained window
  (see :meth:`ApiServer.compact`) gives one ERROR event with a 410 Expired
  Status, as the real server does;
- switches: :meth:`forbid` (403 with a real-looking Status body),
  :meth:`drop_watches` (cut open watch streams mid-chunk), :meth:`set_down`
  (accept connections and close them at once, like an API server restarting).

Tests change state with :meth:`apply_slice` / :meth:`delete_slice` and read
:attr:`lists` / :attr:`watches` to count requests.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATH_RE = re.compile(r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$")


def endpoint_slice(
    name: str,
    service: str,
    endpoints: list[dict[str, Any]],
    *,
    namespace: str = "default",
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    """An EndpointSlice object as the API serves it (resourceVersion is set on apply)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "generateName": f"{service}-",
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports
        if ports is not None
        else [{"name": "grpc", "port": 50051, "protocol": "TCP"}],
    }


def endpoint(
    address: str,
    node: str,
    *,
    zone: str | None = None,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = False,
    pod: str | None = None,
) -> dict[str, Any]:
    """One ``endpoints[]`` entry; ``None`` leaves a condition out (nil)."""
    conditions: dict[str, bool] = {}
    if ready is not None:
        conditions["ready"] = ready
    if serving is not None or ready is not None:
        conditions["serving"] = serving if serving is not None else bool(ready)
    if terminating is not None:
        conditions["terminating"] = terminating
    item: dict[str, Any] = {
        "addresses": [address],
        "conditions": conditions,
        "nodeName": node,
        "targetRef": {
            "kind": "Pod",
            "namespace": "default",
            "name": pod or f"pod-{address.replace('.', '-')}",
        },
    }
    if zone is not None:
        item["zone"] = zone
    return item


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class _Event:
    version: int
    type: str
    obj: dict[str, Any]


@dataclass
class ApiServer:
    """The stand-in server; start with :meth:`start`, stop with :meth:`close`."""

    bookmark_interval: float = 0.5
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[_Event] = field(default_factory=list)
    version: int = 100
    oldest: int = 100
    """Watches from a resourceVersion below this get 410 (the retained window starts here)."""
    lists: int = 0
    watches: int = 0
    forbidden_verbs: tuple[str, ...] = ()
    down: bool = False
    _drop_generation: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _stopping: bool = False

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> ApiServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def write_kubeconfig(self, path: Path, *, context: str = "stand-in") -> Path:
        """A kubeconfig (JSON is valid YAML) pointing at this server, token auth."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "stand-in-token"}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": "stand-in", "user": "tester", "namespace": "default"},
                }
            ],
            "current-context": context,
        }
        path.write_text(json.dumps(config))
        return path

    # -- state changes (test side) ---------------------------------------------

    def apply_slice(self, obj: dict[str, Any]) -> int:
        """Create or replace a slice; returns its new resourceVersion."""
        obj = copy.deepcopy(obj)
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._cond:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            kind = "MODIFIED" if key in self.objects else "ADDED"
            self.objects[key] = obj
            self.events.append(_Event(self.version, kind, obj))
            self._cond.notify_all()
            return self.version

    def delete_slice(self, name: str, namespace: str = "default") -> int:
        with self._cond:
            obj = copy.deepcopy(self.objects.pop((namespace, name)))
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self.events.append(_Event(self.version, "DELETED", obj))
            self._cond.notify_all()
            return self.version

    def bump(self, count: int = 1) -> None:
        """Changes elsewhere in the cluster: resourceVersion moves, nothing we watch changes."""
        with self._cond:
            self.version += count
            self._cond.notify_all()

    def compact(self) -> None:
        """Forget the event history: watches from any older resourceVersion get 410."""
        with self._cond:
            self.events.clear()
            self.oldest = self.version
            self._cond.notify_all()

    def forbid(self, on: bool = True, *, verbs: tuple[str, ...] = ("list", "watch")) -> None:
        """Answer 403 (as RBAC would) to the given verbs."""
        with self._cond:
            self.forbidden_verbs = verbs if on else ()
            if on and "watch" in verbs:
                self._drop_generation += 1  # RBAC changes end open watches
            self._cond.notify_all()

    def set_down(self, on: bool = True) -> None:
        """While down, every request is answered by closing the connection."""
        with self._cond:
            self.down = on
            if on:
                self._drop_generation += 1
            self._cond.notify_all()

    def drop_watches(self) -> None:
        """Cut every open watch stream in the middle (no terminating chunk)."""
        with self._cond:
            self._drop_generation += 1
            self._cond.notify_all()

    def wait_for_watches(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.watches < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.watches} watches, wanted {count}")
                self._cond.wait(left)

    @contextmanager
    def outage(self) -> Iterator[None]:
        self.set_down(True)
        try:
            yield
        finally:
            self.set_down(False)

    # -- request side ----------------------------------------------------------

    def _list(self, namespace: str, selector: str) -> dict[str, Any]:
        with self._cond:
            self.lists += 1
            items = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self.objects.items())
                if ns == namespace and _selector_matches(selector, obj["metadata"]["labels"])
            ]
            return {
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": str(self.version)},
                "items": items,
            }

    def _watch(
        self,
        handler: _Handler,
        namespace: str,
        selector: str,
        since: int,
        timeout: float,
        bookmarks: bool,
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            self.watches += 1
            self._cond.notify_all()
            generation = self._drop_generation
            if since < self.oldest:
                handler.send_event(
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {since} ({self.oldest})",
                            "reason": "Expired",
                            "code": 410,
                        },
                    }
                )
                handler.end_chunks()
                return
        sent = since
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            with self._cond:
                while True:
                    if self._stopping or self._drop_generation != generation:
                        handler.cut()
                        return
                    pending = [e for e in self.events if e.version > sent]
                    now = time.monotonic()
                    if pending or now >= deadline or (bookmarks and now >= next_bookmark):
                        break
                    self._cond.wait(min(deadline, next_bookmark if bookmarks else deadline) - now)
                current = self.version
            for event in pending:
                sent = event.version
                labels = event.obj["metadata"]["labels"]
                if event.obj["metadata"]["namespace"] == namespace and _selector_matches(
                    selector, labels
                ):
                    handler.send_event({"type": event.type, "object": event.obj})
            if time.monotonic() >= deadline:
                handler.end_chunks()
                return
            if bookmarks and time.monotonic() >= next_bookmark:
                sent = max(sent, current)
                handler.send_event(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": "EndpointSlice",
                            "apiVersion": "discovery.k8s.io/v1",
                            "metadata": {"resourceVersion": str(sent)},
                        },
                    }
                )
                next_bookmark = time.monotonic() + self.bookmark_interval


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        api = self.api
        if api.down:
            self.cut()
            return
        url = urlsplit(self.path)
        match = PATH_RE.match(url.path)
        if match is None:
            self.send_json(
                404, _status(404, "NotFound", "the server could not find the requested resource")
            )
            return
        namespace = match.group(1)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        watch = query.get("watch") in ("true", "1")
        verb = "watch" if watch else "list"
        if verb in api.forbidden_verbs:
            message = (
                f"endpointslices.discovery.k8s.io is forbidden: User "
                f'"system:serviceaccount:{namespace}:default" cannot {verb} resource '
                f'"endpointslices" in API group "discovery.k8s.io" in the namespace "{namespace}"'
            )
            body = _status(403, "Forbidden", message)
            body["details"] = {"group": "discovery.k8s.io", "kind": "endpointslices"}
            self.send_json(403, body)
            return
        selector = query.get("labelSelector", "")
        if not watch:
            self.send_json(200, api._list(namespace, selector))
            return
        try:
            since = int(query.get("resourceVersion") or api.version)
        except ValueError:
            self.send_json(400, _status(400, "BadRequest", "invalid resourceVersion"))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            api._watch(
                self,
                namespace,
                selector,
                since,
                float(query.get("timeoutSeconds") or 1800),
                query.get("allowWatchBookmarks") == "true",
            )
        except OSError:
            self.close_connection = True

    def send_json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_event(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def cut(self) -> None:
        """Close the connection at once (mid-stream for a watch)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(2)
        except OSError:
            pass


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _handler_for(api: ApiServer) -> type[_Handler]:
    return type("BoundHandler", (_Handler,), {"api": api})
