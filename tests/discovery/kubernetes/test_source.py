"""KubernetesSource against the API stand-in, with the real kubernetes client."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from protoc_gen_localfirst.runtime.discovery import make_source
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint, TargetError, parse_target
from protoc_gen_localfirst.runtime.discovery.kubernetes import (
    KubernetesSource,
    merge_slices,
    parse_kubernetes_target,
    slice_endpoints,
)
from protoc_gen_localfirst.runtime.discovery.source import (
    DiscoveryError,
    DnsOptions,
    KubernetesOptions,
)
from tests.discovery.kubernetes.apiserver import ApiServer, endpoint, endpoint_slice
from tests.discovery.kubernetes.conftest import Recorder, SourceFactory, addresses
from tests.support.waiting import wait_until


def two_slices(api: ApiServer) -> None:
    api.apply_slice(
        endpoint_slice(
            "greeter-abc",
            "greeter",
            [
                endpoint("10.0.0.1", "node-a", zone="zone-1"),
                endpoint("10.0.0.2", "node-b", zone="zone-1", ready=False),
            ],
            ports=[{"name": "grpc", "port": 50051, "protocol": "TCP"}],
        )
    )
    api.apply_slice(
        endpoint_slice(
            "greeter-def",
            "greeter",
            [endpoint("10.0.0.3", "node-c", zone="zone-2")],
        )
    )
    # Another service in the namespace: must not show up.
    api.apply_slice(endpoint_slice("other-xyz", "other", [endpoint("10.9.9.9", "node-a")]))


# -- targets and parsing (no API) ---------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("kubernetes:///greeter.default:50051", ("greeter", "default", 50051)),
        ("kubernetes:///greeter.prod-1:grpc", ("greeter", "prod-1", "grpc")),
    ],
)
def test_target_forms(target: str, expected: tuple[str, str, int | str]) -> None:
    assert parse_kubernetes_target(parse_target(target)) == expected


def test_target_without_namespace_uses_pod_namespace(tmp_path: Path) -> None:
    ns_file = tmp_path / "namespace"
    ns_file.write_text("team-x\n")
    parsed = parse_target("kubernetes:///greeter:50051")
    assert parse_kubernetes_target(parsed, namespace_file=str(ns_file)) == (
        "greeter",
        "team-x",
        50051,
    )
    missing = str(tmp_path / "missing")
    assert parse_kubernetes_target(parsed, namespace_file=missing)[1] == "default"


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("kubernetes://apiserver/greeter.default:50051", "no authority"),
        ("kubernetes:///greeter.default", "no port"),
        ("kubernetes:///greeter.default:0", "1-65535"),
        ("kubernetes:///greeter.default:Grpc_Port", "port name"),
        ("kubernetes:///Greeter.default:50051", "Service name"),
        ("kubernetes:///greeter.default.svc.cluster.local:50051", "namespace name"),
    ],
)
def test_bad_targets(target: str, fragment: str) -> None:
    with pytest.raises(TargetError, match=fragment):
        make_source(target, kubernetes=KubernetesOptions(kubeconfig="/nonexistent"))


def test_conditions_follow_the_api_reference() -> None:
    obj = endpoint_slice(
        "s",
        "greeter",
        [
            endpoint("10.0.0.1", "n", ready=None, terminating=None),  # nil: ready, not terminating
            endpoint("10.0.0.2", "n", ready=False),
            endpoint("10.0.0.3", "n", ready=True, terminating=True),  # publishNotReadyAddresses
            endpoint("10.0.0.4", "n", ready=False, serving=True, terminating=True),
        ],
    )
    ready = {e.host: e.ready for e in slice_endpoints(obj, 50051)}
    assert ready == {"10.0.0.1": True, "10.0.0.2": False, "10.0.0.3": False, "10.0.0.4": False}


def test_named_port_per_slice() -> None:
    a = endpoint_slice(
        "a", "g", [endpoint("10.0.0.1", "n")], ports=[{"name": "grpc", "port": 9000}]
    )
    b = endpoint_slice("b", "g", [endpoint("10.0.0.2", "n")], ports=[{"name": "http", "port": 80}])
    assert [e.port for e in slice_endpoints(a, "grpc")] == [9000]
    assert slice_endpoints(b, "grpc") == []
    assert [e.port for e in slice_endpoints(b, 50051)] == [50051]


def test_merge_dedupes_and_prefers_ready() -> None:
    merged = merge_slices(
        {
            "a": [Endpoint("10.0.0.1", 1, "n1", ready=False), Endpoint("10.0.0.2", 1, "n1")],
            "b": [Endpoint("10.0.0.1", 1, "n1", ready=True)],
        }
    )
    assert sorted((e.host, e.ready) for e in merged) == [("10.0.0.1", True), ("10.0.0.2", True)]


# -- against the stand-in ------------------------------------------------------


def test_initial_list_merges_slices(api: ApiServer, make_kube_source: SourceFactory) -> None:
    two_slices(api)
    rec = Recorder()
    source = make_kube_source()
    source.start(rec)
    got = rec.wait_for(lambda s: len(s) == 3)
    assert sorted(got, key=lambda e: e.host) == [
        Endpoint("10.0.0.1", 50051, "node-a", "zone-1", True),
        Endpoint("10.0.0.2", 50051, "node-b", "zone-1", False),
        Endpoint("10.0.0.3", 50051, "node-c", "zone-2", True),
    ]
    assert source.last_error is None
    assert api.lists == 1


def test_named_port_through_the_api(api: ApiServer, make_kube_source: SourceFactory) -> None:
    api.apply_slice(
        endpoint_slice(
            "greeter-a",
            "greeter",
            [endpoint("10.0.0.1", "node-a")],
            ports=[{"name": "grpc", "port": 9443, "protocol": "TCP"}],
        )
    )
    rec = Recorder()
    make_kube_source("kubernetes:///greeter.default:grpc").start(rec)
    assert rec.wait_for(lambda s: len(s) == 1)[0].address == "10.0.0.1:9443"


def test_empty_set_is_pushed(api: ApiServer, make_kube_source: SourceFactory) -> None:
    rec = Recorder()
    make_kube_source().start(rec)
    assert rec.wait_for(lambda s: True) == []


def test_events_update_the_set(api: ApiServer, make_kube_source: SourceFactory) -> None:
    two_slices(api)
    rec = Recorder()
    source = make_kube_source()
    source.start(rec)
    rec.wait_for(lambda s: len(s) == 3)
    api.wait_for_watches(1)

    # ADDED: a third slice.
    api.apply_slice(endpoint_slice("greeter-ghi", "greeter", [endpoint("10.0.0.4", "node-a")]))
    rec.wait_for(lambda s: "10.0.0.4:50051" in addresses(s))

    # MODIFIED: the not-ready one becomes ready, 10.0.0.1 moves to a new IP.
    api.apply_slice(
        endpoint_slice(
            "greeter-abc",
            "greeter",
            [endpoint("10.0.1.1", "node-a", zone="zone-1"), endpoint("10.0.0.2", "node-b")],
        )
    )
    got = rec.wait_for(lambda s: "10.0.1.1:50051" in addresses(s))
    assert addresses(got) == {
        "10.0.1.1:50051",
        "10.0.0.2:50051",
        "10.0.0.3:50051",
        "10.0.0.4:50051",
    }
    assert all(e.ready for e in got)

    # DELETED: a whole slice goes.
    api.delete_slice("greeter-def")
    got = rec.wait_for(lambda s: "10.0.0.3:50051" not in addresses(s))
    assert len(got) == 3

    # Everything goes: the empty set is pushed too.
    api.delete_slice("greeter-abc")
    api.delete_slice("greeter-ghi")
    rec.wait_for(lambda s: s == [])
    assert api.lists == 1


def test_terminating_endpoint_is_not_ready(api: ApiServer, make_kube_source: SourceFactory) -> None:
    api.apply_slice(
        endpoint_slice(
            "greeter-a", "greeter", [endpoint("10.0.0.1", "node-a"), endpoint("10.0.0.2", "node-b")]
        )
    )
    rec = Recorder()
    make_kube_source().start(rec)
    rec.wait_for(lambda s: len(s) == 2)
    api.wait_for_watches(1)
    api.apply_slice(
        endpoint_slice(
            "greeter-a",
            "greeter",
            [
                endpoint("10.0.0.1", "node-a", ready=False, serving=True, terminating=True),
                endpoint("10.0.0.2", "node-b"),
            ],
        )
    )
    got = rec.wait_for(lambda s: any(not e.ready for e in s))
    assert {e.host: e.ready for e in got} == {"10.0.0.1": False, "10.0.0.2": True}


def test_duplicate_address_across_slices(api: ApiServer, make_kube_source: SourceFactory) -> None:
    # During a slice rebalance the same pod can appear in two slices for a moment.
    api.apply_slice(
        endpoint_slice("greeter-a", "greeter", [endpoint("10.0.0.1", "node-a", ready=False)])
    )
    api.apply_slice(endpoint_slice("greeter-b", "greeter", [endpoint("10.0.0.1", "node-a")]))
    rec = Recorder()
    make_kube_source().start(rec)
    got = rec.wait_for(lambda s: len(s) == 1)
    assert got[0].ready


def test_bookmarks_let_rewatch_skip_the_list(
    api: ApiServer, make_kube_source: SourceFactory
) -> None:
    two_slices(api)
    rec = Recorder()
    source = make_kube_source(watch_timeout=1)  # server ends each watch after 1-2 s
    source.start(rec)
    rec.wait_for(lambda s: len(s) == 3)
    listed_at = source.resource_version
    api.bump(5)  # the cluster moves on elsewhere
    wait_until(
        lambda: source.resource_version == str(api.version),
        what="the resource version of a BOOKMARK",
    )
    assert source.resource_version != listed_at
    api.compact()  # only bookmarked versions are still in the window
    api.wait_for_watches(3)  # at least two server-side timeouts and re-watches
    assert api.lists == 1
    assert len(rec.sets) == 1  # bookmarks and re-watches push nothing
    api.apply_slice(endpoint_slice("greeter-x", "greeter", [endpoint("10.0.0.9", "node-a")]))
    rec.wait_for(lambda s: len(s) == 4)
    assert api.lists == 1


def test_gone_relists(api: ApiServer, make_kube_source: SourceFactory) -> None:
    two_slices(api)
    rec = Recorder()
    source = make_kube_source()
    source.start(rec)
    rec.wait_for(lambda s: len(s) == 3)
    api.wait_for_watches(1)
    with api.outage():  # the watch drops; while away, history is compacted
        api.delete_slice("greeter-def")
        api.apply_slice(endpoint_slice("greeter-new", "greeter", [endpoint("10.0.0.7", "node-b")]))
        api.compact()
    got = rec.wait_for(lambda s: "10.0.0.7:50051" in addresses(s))
    assert addresses(got) == {"10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.7:50051"}
    assert api.lists == 2
    wait_until(lambda: source.last_error is None, what="last_error cleared")


def test_dropped_watch_reconnects_and_keeps_the_set(
    api: ApiServer, make_kube_source: SourceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="protoc_gen_localfirst.discovery.kubernetes")
    two_slices(api)
    rec = Recorder()
    source = make_kube_source()
    source.start(rec)
    rec.wait_for(lambda s: len(s) == 3)
    api.wait_for_watches(1)

    api.drop_watches()  # a single cut: re-watch from the last resourceVersion
    api.wait_for_watches(2)
    api.apply_slice(endpoint_slice("greeter-x", "greeter", [endpoint("10.0.0.9", "node-a")]))
    rec.wait_for(lambda s: len(s) == 4)
    assert api.lists == 1

    assert source.last_error is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # one cut: no outage
    pushes = len(rec.sets)
    with api.outage():
        wait_until(lambda: source.last_error is not None, what="a watch error")
        assert "unreachable" in (source.last_error or "")
        time.sleep(0.5)  # scenario: several failed reconnects (backoff max 0.3 s) change nothing
        assert len(rec.sets) == pushes  # the last known set stays
    api.delete_slice("greeter-x")
    rec.wait_for(lambda s: len(s) == 3)
    assert source.last_error is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    recoveries = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert len(recoveries) == 1


def test_forbidden_names_verb_and_resource(api: ApiServer, make_kube_source: SourceFactory) -> None:
    api.forbid()
    rec = Recorder()
    source = make_kube_source()
    source.start(rec)
    wait_until(lambda: source.last_error is not None, what="a watch error")
    error = source.last_error or ""
    assert error.startswith("kubernetes:///greeter.default:50051: forbidden:")
    assert "list endpointslices.discovery.k8s.io in namespace default" in error
    assert "get, list, watch" in error
    assert rec.sets == []
    # RBAC gets fixed: the source notices on its next retry.
    api.forbid(False)
    rec.wait_for(lambda s: True)
    wait_until(lambda: source.last_error is None, what="last_error cleared")


def test_forbidden_with_fallback(api: ApiServer, make_kube_source: SourceFactory) -> None:
    two_slices(api)
    api.forbid()
    rec = Recorder()
    source = make_kube_source(fallback_target="static:///127.0.0.1:1@node-x")
    source.start(rec)
    got = rec.wait_for(lambda s: len(s) == 1)
    assert got == [Endpoint("127.0.0.1", 1, "node-x")]
    assert "forbidden" in (source.last_error or "")
    # RBAC fixed: back to EndpointSlices, fallback closed.
    api.forbid(False)
    rec.wait_for(lambda s: len(s) == 3)


def test_unreachable_at_start_uses_fallback(
    make_kube_source: SourceFactory, api: ApiServer
) -> None:
    api.set_down(True)
    rec = Recorder()
    source = make_kube_source(fallback_target="static:///127.0.0.1:1@node-x")
    source.start(rec)
    rec.wait_for(lambda s: len(s) == 1)
    assert "unreachable" in (source.last_error or "")


def test_missing_kubeconfig(tmp_path: Path) -> None:
    options = KubernetesOptions(kubeconfig=str(tmp_path / "nope"))
    with pytest.raises(DiscoveryError, match="cannot load Kubernetes config"):
        KubernetesSource(parse_target("kubernetes:///greeter.default:1"), options, dns=DnsOptions())
    # With a fallback the source starts on it instead.
    rec = Recorder()
    fallback = KubernetesOptions(
        kubeconfig=options.kubeconfig, fallback_target="static:///127.0.0.1:1@n"
    )
    source = KubernetesSource(
        parse_target("kubernetes:///greeter.default:1"),
        fallback,
        dns=DnsOptions(),
        make_fallback=make_source,
    )
    source.start(rec)
    assert rec.sets == [[Endpoint("127.0.0.1", 1, "n")]]
    source.close()


def test_close_is_prompt_and_final(api: ApiServer, make_kube_source: SourceFactory) -> None:
    two_slices(api)
    rec = Recorder()
    source = make_kube_source(watch_timeout=300)
    source.start(rec)
    rec.wait_for(lambda s: len(s) == 3)
    api.wait_for_watches(1)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 2.0
    thread = source._thread
    assert thread is not None and not thread.is_alive()
    pushes = len(rec.sets)
    api.apply_slice(endpoint_slice("greeter-x", "greeter", [endpoint("10.0.0.9", "node-a")]))
    time.sleep(0.3)  # scenario: a closed source pushes nothing, however long we look
    assert len(rec.sets) == pushes


def test_close_during_outage(api: ApiServer, make_kube_source: SourceFactory) -> None:
    api.set_down(True)
    source = make_kube_source()
    source.start(Recorder())
    wait_until(lambda: source.last_error is not None, what="a watch error")
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 2.0


def test_forbidden_watch_only(api: ApiServer, make_kube_source: SourceFactory) -> None:
    two_slices(api)
    api.forbid(verbs=("watch",))
    rec = Recorder()
    source = make_kube_source(fallback_target="static:///127.0.0.1:1@node-x")
    source.start(rec)
    wait_until(lambda: "forbidden" in (source.last_error or ""), what="a forbidden error")
    assert "cannot watch endpointslices.discovery.k8s.io" in (source.last_error or "")
    # The list worked, then the watch was refused: the fallback takes over.
    rec.wait_for(lambda s: addresses(s) == {"127.0.0.1:1"})
    api.forbid(False)
    # The watch resumes: the listener gets the EndpointSlice set back without a new event.
    rec.wait_for(lambda s: len(s) == 3)
    assert api.lists == 1


def test_idle_watch_is_rewatched_quietly(
    api: ApiServer, make_kube_source: SourceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="protoc_gen_localfirst.discovery.kubernetes")
    api.bookmark_interval = 60  # a silent watch: no events, no bookmarks
    two_slices(api)
    rec = Recorder()
    source = make_kube_source(idle_timeout=0.3)
    source.start(rec)
    rec.wait_for(lambda s: len(s) == 3)
    api.wait_for_watches(4)  # re-watched after each silence
    assert api.lists == 1
    assert source.last_error is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    api.delete_slice("greeter-def")
    rec.wait_for(lambda s: len(s) == 2)
