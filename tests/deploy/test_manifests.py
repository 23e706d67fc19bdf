"""deploy/: Kubernetes manifests and Dockerfile for the example Greeter.

Schema validation runs the real ``kubernetes-validate`` CLI as a subprocess, in
strict mode (unknown fields are errors), against two pinned schema versions:
1.30 (the oldest the manifests support: preStop ``sleep``) and the newest the
installed package bundles. The schemas ship inside the package; one test runs
the validator with sockets disabled to prove it needs no network.

kubernetes-validate has no schemas for cert-manager's kinds: those objects
(certificates.yaml) are checked in test_tls.py, as is the TLS wiring.

The rest are semantic checks the schemas cannot express: Downward API env,
grpc probes on the plaintext health port (not the served port, not in the
Service), RBAC scope, Service/Deployment label
agreement, drain arithmetic against the server's own constants, and a static
look at the Dockerfile (no Docker engine here to build it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in dev deps

from protoc_gen_localfirst.runtime.server.bootstrap import REFUSAL_WINDOW

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"

MIN_KUBERNETES = "1.30"
"""Oldest Kubernetes the manifests target (lifecycle.preStop.sleep is beta/on in 1.30)."""

MARGIN_SECONDS = 2
"""terminationGracePeriodSeconds must exceed the whole drain by at least this much."""

DOWNWARD_API = {
    "NODE_NAME": "spec.nodeName",
    "POD_IP": "status.podIP",
    "POD_NAME": "metadata.name",
}


# -- helpers -------------------------------------------------------------------


def manifest_files() -> list[Path]:
    """The manifests kustomization.yaml applies (checked below to be all of them)."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [DEPLOY / name for name in kustomization["resources"]]


def load_all() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in manifest_files():
        docs.extend(load_file(path))
    return docs


def load_file(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


CERT_MANAGER_GROUP = "cert-manager.io"


def is_cert_manager(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).split("/")[0] == CERT_MANAGER_GROUP


def core_manifest_files() -> list[Path]:
    """The manifests kubernetes-validate has schemas for (no cert-manager objects)."""
    return [p for p in manifest_files() if not any(is_cert_manager(d) for d in load_file(p))]


def core_docs() -> list[dict[str, Any]]:
    return [d for p in core_manifest_files() for d in load_file(p)]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in load_all()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def greeter_container() -> dict[str, Any]:
    containers = one("Deployment", "greeter")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def flag(args: list[str], name: str) -> str:
    """The value of ``--name=value`` (or ``--name value``) in a container's args."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return args[i + 1]
    raise AssertionError(f"{name} missing from args {args}")


def newest_schema_version() -> str:
    from kubernetes_validate import utils  # type: ignore[import-untyped]

    return str(utils.latest_version())


def validate(*args: str | Path, offline: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the kubernetes-validate CLI (``python -m kubernetes_validate``) as a subprocess."""
    argv = [str(a) for a in args]
    if offline:
        # Same CLI, but every socket connect and DNS lookup raises first.
        guard = (
            "import runpy, socket, sys\n"
            "def _no_network(*a, **k):\n"
            "    raise OSError('network disabled by test')\n"
            "socket.socket.connect = _no_network\n"
            "socket.socket.connect_ex = _no_network\n"
            "socket.getaddrinfo = _no_network\n"
            "socket.create_connection = _no_network\n"
            "sys.argv = ['kubernetes-validate'] + sys.argv[1:]\n"
            "runpy.run_module('kubernetes_validate', run_name='__main__')\n"
        )
        command = [sys.executable, "-c", guard, *argv]
    else:
        command = [sys.executable, "-m", "kubernetes_validate", *argv]
    result = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    print("$", shlex.join(["kubernetes-validate", *argv]))
    print(result.stdout, result.stderr, sep="")
    return result


def assert_all_passed(result: subprocess.CompletedProcess[str], expected_passes: int) -> None:
    """Exit 0 AND one INFO ... passed line per resource and version.

    kubernetes-validate exits 0 when it has no schema for a kind/apiVersion
    (it only prints WARN), so a typo in ``kind`` or ``apiVersion`` would pass
    on the exit code alone.
    """
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN" not in result.stdout, result.stdout
    assert "ERROR" not in result.stdout, result.stdout
    passes = [line for line in result.stdout.splitlines() if " passed for resource " in line]
    assert len(passes) == expected_passes, result.stdout


# -- schema validation (subprocess) -------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert {p.name for p in manifest_files()} == on_disk


def test_every_object_is_validated_by_one_checker() -> None:
    """A file holds only core kinds (kubernetes-validate) or only cert-manager's (test_tls)."""
    for path in manifest_files():
        kinds = {is_cert_manager(d) for d in load_file(path)}
        assert len(kinds) == 1, f"{path.name} mixes cert-manager and core objects"
    assert core_manifest_files() and len(core_manifest_files()) < len(manifest_files())


@pytest.mark.parametrize("version", [MIN_KUBERNETES, "newest"])
def test_manifests_validate_strict(version: str) -> None:
    if version == "newest":
        version = newest_schema_version()
    from kubernetes_validate.version import __version__  # type: ignore[import-untyped]

    print(f"kubernetes-validate {__version__}: schemas for Kubernetes {version}")
    files = core_manifest_files()
    result = validate("--strict", "-k", version, *files)
    assert_all_passed(result, expected_passes=len(core_docs()))


def test_validation_needs_no_network() -> None:
    result = validate("--strict", "-k", MIN_KUBERNETES, *core_manifest_files(), offline=True)
    assert_all_passed(result, expected_passes=len(core_docs()))


def test_validator_rejects_a_misspelled_field(tmp_path: Path) -> None:
    """The check can fail: a typo is an ERROR in strict mode (and silently passes without)."""
    text = (DEPLOY / "greeter.yaml").read_text()
    typo, count = re.subn(
        r"^(\s+)terminationGracePeriodSeconds:",
        r"\1terminationGracePeriodSecond:",
        text,
        flags=re.MULTILINE,
    )
    assert count == 1
    broken = tmp_path / "greeter-broken.yaml"
    broken.write_text(typo)
    strict = validate("--strict", "-k", MIN_KUBERNETES, broken)
    assert strict.returncode != 0
    assert "ERROR" in strict.stdout
    assert "deployment/greeter" in strict.stdout
    assert "terminationGracePeriodSecond" in strict.stdout
    # Why --strict is not optional: without it the typo is accepted.
    lax = validate("-k", MIN_KUBERNETES, broken)
    assert lax.returncode == 0


def test_validator_rejects_a_wrong_type(tmp_path: Path) -> None:
    broken = tmp_path / "greeter-broken.yaml"
    broken.write_text(
        (DEPLOY / "greeter.yaml").read_text().replace("replicas: 3", "replicas: three")
    )
    result = validate("--strict", "-k", MIN_KUBERNETES, broken)
    assert result.returncode != 0
    assert "spec.replicas" in result.stdout


def test_unknown_api_version_is_caught_by_our_wrapper(tmp_path: Path) -> None:
    """kubernetes-validate only WARNs (exit 0) for an unknown kind/apiVersion; we fail it."""
    broken = tmp_path / "greeter-broken.yaml"
    broken.write_text((DEPLOY / "greeter.yaml").read_text().replace("apps/v1", "apps/v2"))
    result = validate("--strict", "-k", MIN_KUBERNETES, broken)
    assert result.returncode == 0  # the tool's own verdict
    with pytest.raises(AssertionError):
        assert_all_passed(result, expected_passes=len(list(yaml.safe_load_all(broken.read_text()))))


# -- semantic checks -----------------------------------------------------------


def test_manifests_are_namespace_agnostic() -> None:
    for doc in load_all():
        assert "namespace" not in doc["metadata"], doc["metadata"]
    for subject in one("RoleBinding")["subjects"]:
        assert "namespace" not in subject  # means: the RoleBinding's own namespace


def test_deployment_spreads_three_replicas_over_nodes_and_zones() -> None:
    deployment = one("Deployment", "greeter")
    spec = deployment["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    constraints = {
        c["topologyKey"]: c for c in spec["template"]["spec"]["topologySpreadConstraints"]
    }
    host = constraints["kubernetes.io/hostname"]
    zone = constraints["topology.kubernetes.io/zone"]
    assert host["maxSkew"] == 1 and host["whenUnsatisfiable"] == "DoNotSchedule"
    assert zone["maxSkew"] == 1 and zone["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in (host, zone):
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_downward_api_env() -> None:
    env = {e["name"]: e for e in greeter_container()["env"]}
    for name, field_path in DOWNWARD_API.items():
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == field_path
    # The server's node identity and replica name come from them.
    args = greeter_container()["args"]
    assert flag(args, "--node") == "$(NODE_NAME)"
    assert flag(args, "--name") == "$(POD_NAME)"
    # $(VAR) in args only expands for variables defined in the container's env.
    for var in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert var in env, var


def test_container_args_are_flags_demo_replica_accepts() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "generated"), str(REPO)]))
    result = subprocess.run(
        [sys.executable, "-m", "demo.replica", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    for arg in greeter_container()["args"]:
        name = arg.split("=", 1)[0]
        assert name in result.stdout, f"demo.replica has no {name}"


PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def health_port(container: dict[str, Any]) -> int:
    """``--health-port``: the plaintext listener serving grpc.health.v1 only."""
    return int(flag(container["args"], "--health-port"))


def check_probes(container: dict[str, Any]) -> None:
    """kubelet's grpc probes, on the container port whose number is ``--health-port``.

    Never on ``--port``: that port is TLS only and kubelet's grpc probe speaks
    plaintext. ``grpc.port`` takes a number, not a port name, so it is matched
    against the named container port and the flag.
    """
    port = health_port(container)
    assert port != int(flag(container["args"], "--port"))
    (declared,) = [p for p in container["ports"] if p["containerPort"] == port]
    assert declared["name"] == "health"
    assert declared.get("protocol", "TCP") == "TCP"
    probes = [container[name] for name in PROBES if name in container]
    assert {"readinessProbe", "livenessProbe"} <= {name for name in PROBES if name in container}
    for probe in probes:
        assert set(probe) & {"httpGet", "tcpSocket", "exec"} == set(), probe
        assert probe["grpc"]["port"] == port, probe
        # "" (or absent): the server's overall status, which turns NOT_SERVING on drain.
        assert probe["grpc"].get("service", "") == ""
        assert "mode" not in probe["grpc"]  # plaintext: that port has no TLS


def test_grpc_port_and_probes() -> None:
    container = greeter_container()
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["grpc"]["containerPort"] == 50051
    assert ports["grpc"].get("protocol", "TCP") == "TCP"
    assert int(flag(container["args"], "--port")) == 50051
    check_probes(container)
    assert ports["health"]["containerPort"] == health_port(container) == 8081
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert 1 <= probe["periodSeconds"] <= 30
    # A draining pod answers NOT_SERVING on the health port from SIGTERM on;
    # liveness must not kill it before the drain ends.
    liveness = container["livenessProbe"]
    grace = one("Deployment", "greeter")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > grace
    if "startupProbe" in container:
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] > grace


def set_arg(container: dict[str, Any], name: str, value: str) -> None:
    args = container["args"]
    (i,) = [i for i, a in enumerate(args) if a.startswith(f"{name}=")]
    args[i] = f"{name}={value}"


PROBE_MISTAKES: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "readiness on the TLS port": (
        lambda c: c["readinessProbe"].update(grpc={"port": 50051}),
        "'port': 50051",
    ),
    "liveness on an undeclared port": (
        lambda c: c["livenessProbe"].update(grpc={"port": 8082}),
        "'port': 8082",
    ),
    "a tcpSocket probe left in": (
        lambda c: c["livenessProbe"].update(tcpSocket={"port": "grpc"}),
        "tcpSocket",
    ),
    "no --health-port": (
        lambda c: c["args"].remove("--health-port=8081"),
        "--health-port missing",
    ),
    "--health-port equal to --port": (
        lambda c: set_arg(c, "--health-port", "50051"),
        "assert 50051 != 50051",
    ),
    "the health port under another name": (
        lambda c: next(p for p in c["ports"] if p["containerPort"] == 8081).update(name="probe"),
        "'probe' == 'health'",
    ),
    "a TLS mode on the probe": (
        lambda c: c["readinessProbe"]["grpc"].update(mode="TLS"),
        "'mode' not in",
    ),
}


@pytest.mark.parametrize("mistake", sorted(PROBE_MISTAKES))
def test_the_probe_checks_catch_mistakes(mistake: str) -> None:
    change, complaint = PROBE_MISTAKES[mistake]
    container = greeter_container()
    change(container)
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check_probes(container)


def service_exposes(service: dict[str, Any], container: dict[str, Any], port: int) -> bool:
    """Whether a Service port reaches container port ``port`` (by name or by number)."""
    names = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    for service_port in service["spec"]["ports"]:
        target = service_port.get("targetPort", service_port["port"])
        if names.get(target, target) == port or service_port["port"] == port:
            return True
    return False


def test_health_port_is_not_in_the_service() -> None:
    """kubelet probes the pod IP; clients must not find the plaintext port through the Service."""
    container = greeter_container()
    service = one("Service", "greeter")
    port = health_port(container)
    assert not service_exposes(service, container, port)
    assert service_exposes(service, container, int(flag(container["args"], "--port")))
    assert "health" not in {p["name"] for p in service["spec"]["ports"]}
    # The check can fail: a Service port naming the health port is seen.
    service["spec"]["ports"].append({"name": "health", "port": 8081, "targetPort": "health"})
    assert service_exposes(service, container, port)


def test_security_and_resources() -> None:
    pod = one("Deployment", "greeter")["spec"]["template"]["spec"]
    container = greeter_container()
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert sc["runAsUser"] == dockerfile_uid() != 0
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])


def test_drain_fits_in_termination_grace_period() -> None:
    pod = one("Deployment", "greeter")["spec"]["template"]["spec"]
    container = greeter_container()
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain_delay = float(flag(container["args"], "--drain-delay"))
    grace = float(flag(container["args"], "--grace"))
    # Counted on top of grace, as the README describes it (the code takes it
    # out of grace, so this is the conservative side).
    refusal = REFUSAL_WINDOW
    total = pre_stop + drain_delay + refusal + grace
    print(
        f"preStop {pre_stop} + drain_delay {drain_delay} + refusal {refusal} + grace {grace}"
        f" = {total} s; terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']}"
    )
    assert total + MARGIN_SECONDS <= pod["terminationGracePeriodSeconds"]
    # Between deletion and the refusal step clients must have time to drop the
    # endpoint: EndpointSlice watchers take about a second, DNS caches up to 5 s.
    assert pre_stop + drain_delay >= 5


def test_headless_service_selects_the_pods() -> None:
    service = one("Service", "greeter")
    spec = service["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is False
    pod_labels = one("Deployment", "greeter")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= pod_labels.items()
    assert spec["selector"] == one("Deployment", "greeter")["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p for p in spec["ports"]}
    container_ports = {p["name"]: p for p in greeter_container()["ports"]}
    assert ports["grpc"]["port"] == 50051 and ports["grpc"]["protocol"] == "TCP"
    # gRPC over TLS: HTTP/2 over TLS, not h2c (HTTP/2 without TLS) any more.
    assert ports["grpc"]["appProtocol"] == "https"
    for port in ports.values():
        target = container_ports[port["targetPort"]]
        assert target["containerPort"] == port["port"]
        assert target.get("protocol", "TCP") == port.get("protocol", "TCP")


def test_pod_disruption_budget_selects_the_pods() -> None:
    pdb = one("PodDisruptionBudget", "greeter")
    pod_labels = one("Deployment", "greeter")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_client_rbac_reads_endpointslices_only() -> None:
    role = one("Role")
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["discovery.k8s.io"]
    assert rule["resources"] == ["endpointslices"]
    assert sorted(rule["verbs"]) == ["get", "list", "watch"]
    assert "resourceNames" not in rule

    account = one("ServiceAccount", "greeter-client")
    binding = one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]


def test_server_does_not_get_the_client_account() -> None:
    pod = one("Deployment", "greeter")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "greeter"
    one("ServiceAccount", "greeter")


# -- Dockerfile (static: no Docker engine here) -------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "dangling line continuation"
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1]) for l in logical]


def instruction(name: str) -> list[str]:
    return [args for inst, args in dockerfile_instructions() if inst == name]


def dockerfile_uid() -> int:
    (user,) = instruction("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "USER must be numeric so runAsNonRoot can verify it"
    return int(uid)


def test_dockerfile_base_user_signal() -> None:
    (base,) = instruction("FROM")
    assert base.startswith("python:3.11-slim")
    assert dockerfile_uid() != 0
    assert instruction("STOPSIGNAL") == ["SIGTERM"]
    # The user is created with that uid before switching to it.
    assert any(f"--uid {dockerfile_uid()}" in run for run in instruction("RUN"))


def test_dockerfile_copies_existing_paths_and_installs_the_package() -> None:
    copies = instruction("COPY")
    assert copies
    destinations: dict[str, str] = {}
    for args in copies:
        parts = args.split()
        assert not any(p.startswith("--from") for p in parts), "single-stage build expected"
        *sources, dest = parts
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not Path(source).is_absolute() and ".." not in Path(source).parts
            destinations[source] = dest
    assert destinations["generated"] == "/app/generated"
    assert destinations["demo"] == "/app/demo"
    # What the wheel build needs (pyproject: readme, version file, force-included templates).
    for needed in ("pyproject.toml", "README.md", "protoc_gen_localfirst", "templates"):
        assert needed in destinations, f"{needed} not copied"
    assert any('pip install "/src[kubernetes,http3]"' in run for run in instruction("RUN"))


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    """deploy/Dockerfile.dockerignore ignores everything except an allow-list."""
    lines = [
        l.strip()
        for l in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    assert lines[0] == "**"
    allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    for args in instruction("COPY"):
        *sources, _ = args.split()
        for source in sources:
            assert source in allowed, f"COPY {source} is excluded by Dockerfile.dockerignore"


def test_dockerfile_runs_demo_replica_in_exec_form() -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form: a JSON array, so python is PID 1
    assert argv == ["python", "-m", "demo.replica"]
    assert (REPO / "demo" / "replica.py").is_file()
    (cmd,) = instruction("CMD")
    assert isinstance(json.loads(cmd), list)
    env = " ".join(instruction("ENV"))
    match = re.search(r"PYTHONPATH=(\S+)", env)
    assert match, "PYTHONPATH not set"
    path = match.group(1).split(":")
    assert "/app/generated" in path and "/app" in path
    # The module demo.replica imports exists under the copied generated/ tree.
    assert (REPO / "generated" / "greeter" / "v1" / "greeter_localfirst.py").is_file()


def test_image_name_agrees_with_readme() -> None:
    image = greeter_container()["image"]
    assert image in (DEPLOY / "README.md").read_text()
    assert image in DOCKERFILE.read_text()
