"""deploy/: TLS with cert-manager, and how it reaches the server and the clients.

cert-manager's kinds (Issuer, Certificate) are not in kubernetes-validate's
schemas. ``CERT_MANAGER_SCHEMAS`` is a strict JSON schema of the cert-manager.io/v1
fields these manifests use, with the names, types and enums of cert-manager's
CRDs (v1.21): an unknown or misspelled field, or a value outside an enum, fails.

The wiring checks: the Certificate's Secret is the one the Deployment mounts,
the mount is a read-only directory (no subPath: a subPath mount never sees a
rotation), --certfile/--keyfile/--client-ca-file point into it at cert-manager's
key names, dnsNames cover every form of the Service's DNS name in the namespace
kustomization.yaml sets, HTTP/3 has its UDP ports and never meets mTLS, and
kubelet's plaintext grpc probes go to the health-only port, never to the TLS
port, with or without the mTLS Component (the health port is not in the Service).

``kubectl kustomize`` (kustomize built into kubectl, offline) renders deploy/
and the mTLS Component (these tests fail if kubectl is missing); the static checks of the
kustomization run always.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema  # a dev dependency (pyproject)
import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in dev deps

from tests.deploy.test_manifests import (
    DEPLOY,
    MIN_KUBERNETES,
    REPO,
    assert_all_passed,
    check_probes,
    flag,
    greeter_container,
    health_port,
    is_cert_manager,
    load_all,
    one,
    service_exposes,
    validate,
)

SERVICE = "greeter"
PLACEHOLDER = "NAMESPACE"
SECRET_KEYS = {"--certfile": "tls.crt", "--keyfile": "tls.key", "--client-ca-file": "ca.crt"}
"""cert-manager writes these keys into a Certificate's Secret."""

KUBECTL = shutil.which("kubectl")

# -- a strict schema of the cert-manager.io/v1 fields used -------------------

GO_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
USAGES = [
    "signing", "digital signature", "content commitment", "key encipherment",
    "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
    "decipher only", "any", "server auth", "client auth", "code signing",
    "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
    "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
]  # fmt: skip


def _strict(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


_STRING = {"type": "string"}
_METADATA = _strict(
    {
        "name": _STRING,
        "namespace": _STRING,  # set by kustomize (kustomization.yaml), never in the files
        "labels": {"type": "object", "additionalProperties": _STRING},
        "annotations": {"type": "object", "additionalProperties": _STRING},
    },
    ["name"],
)
CERT_MANAGER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Issuer": _strict(
        {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": "Issuer"},
            "metadata": _METADATA,
            "spec": {
                **_strict({"selfSigned": _strict({}), "ca": _strict({"secretName": _STRING})}),
                # exactly one issuer type
                "minProperties": 1,
                "maxProperties": 1,
            },
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    "Certificate": _strict(
        {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": "Certificate"},
            "metadata": _METADATA,
            "spec": _strict(
                {
                    "secretName": _STRING,
                    "commonName": _STRING,
                    "dnsNames": {"type": "array", "items": _STRING, "minItems": 1},
                    "isCA": {"type": "boolean"},
                    "usages": {"type": "array", "items": {"enum": USAGES}},
                    "duration": {"type": "string", "pattern": GO_DURATION},
                    "renewBefore": {"type": "string", "pattern": GO_DURATION},
                    "privateKey": _strict(
                        {
                            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                            "size": {"type": "integer"},
                            "encoding": {"enum": ["PKCS1", "PKCS8"]},
                            "rotationPolicy": {"enum": ["Never", "Always"]},
                        }
                    ),
                    "issuerRef": _strict(
                        {"name": _STRING, "kind": _STRING, "group": _STRING}, ["name"]
                    ),
                },
                ["secretName", "issuerRef"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
}


def check_cert_manager(doc: dict[str, Any]) -> None:
    schema = CERT_MANAGER_SCHEMAS.get(doc["kind"])
    assert schema is not None, f"no schema for {doc['apiVersion']} {doc['kind']}"
    jsonschema.validate(doc, schema)
    spec = doc["spec"]
    if doc["kind"] == "Certificate":
        # cert-manager's own rules: at least one name, and renewal before expiry.
        names = ("commonName", "dnsNames", "uris", "emailAddresses", "ipAddresses")
        assert any(spec.get(k) for k in names), doc["metadata"]["name"]
        assert hours(spec["renewBefore"]) < hours(spec["duration"])


def hours(duration: str) -> float:
    unit = {"h": 1.0, "m": 1 / 60, "s": 1 / 3600}
    parts = re.findall(r"([0-9.]+)(h|m|s)", duration)
    assert "".join(a + b for a, b in parts) == duration, f"{duration}: use h, m, s"
    return sum(float(n) * unit[u] for n, u in parts)


def cert_manager_docs() -> list[dict[str, Any]]:
    return [d for d in load_all() if is_cert_manager(d)]


def certificate(name: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    (found,) = [
        d
        for d in (docs if docs is not None else load_all())
        if d["kind"] == "Certificate" and d["metadata"]["name"] == name
    ]
    return found


def test_cert_manager_objects_match_the_schema() -> None:
    docs = cert_manager_docs()
    assert {d["kind"] for d in docs} == {"Issuer", "Certificate"}
    for doc in docs:
        check_cert_manager(doc)


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        (("spec", "privateKey", "rotationpolicy"), "Always", "Additional properties"),
        (("spec", "privateKey", "rotationPolicy"), "always", "is not one of"),
        (("spec", "usages"), ["server-auth"], "is not one of"),
        (("spec", "duration"), "30d", "does not match"),
        (("spec", "dnsName"), ["greeter"], "Additional properties"),
    ],
)
def test_schema_check_rejects_mistakes(path: tuple[str, ...], value: Any, complaint: str) -> None:
    doc = certificate("greeter-tls")
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=complaint):
        check_cert_manager(doc)


# -- the issuer chain --------------------------------------------------------


def issuer(name: str) -> dict[str, Any]:
    (found,) = [
        d for d in cert_manager_docs() if d["kind"] == "Issuer" and d["metadata"]["name"] == name
    ]
    return found


def issuer_of(cert: dict[str, Any]) -> dict[str, Any]:
    ref = cert["spec"]["issuerRef"]
    assert ref.get("kind", "Issuer") == "Issuer"  # namespaced: no cluster-wide rights needed
    assert ref.get("group", "cert-manager.io") == "cert-manager.io"
    return issuer(ref["name"])


def test_issuer_chain_self_signed_ca_then_leaves() -> None:
    ca = certificate("greeter-ca")
    assert ca["spec"]["isCA"] is True
    assert "selfSigned" in issuer_of(ca)["spec"]
    for name in ("greeter-tls", "greeter-client-tls"):
        leaf = certificate(name)
        assert leaf["spec"].get("isCA", False) is False  # webpki: a leaf is CA:FALSE
        assert issuer_of(leaf)["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    # The self-signed issuer signs the CA only: a self-signed leaf would be
    # refused by HTTP/3's verifier.
    for cert in cert_manager_docs():
        if cert["kind"] == "Certificate" and "selfSigned" in issuer_of(cert)["spec"]:
            assert cert["spec"]["isCA"] is True


def test_leaf_certificates_ecdsa_rotated_keys_and_usages() -> None:
    usages = {"greeter-tls": "server auth", "greeter-client-tls": "client auth"}
    for name, usage in usages.items():
        spec = certificate(name)["spec"]
        assert spec["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}
        assert usage in spec["usages"]
        assert "key encipherment" not in spec["usages"]  # ECDSA keys do not encipher
        # Renewed with at least a day to spare; short enough that rotation is routine.
        assert 24 <= hours(spec["renewBefore"]) and hours(spec["duration"]) <= 90 * 24


def test_server_dns_names_cover_every_form_of_the_service_name() -> None:
    names = certificate("greeter-tls")["spec"]["dnsNames"]
    assert names == [
        SERVICE,
        f"{SERVICE}.{PLACEHOLDER}",
        f"{SERVICE}.{PLACEHOLDER}.svc",
        f"{SERVICE}.{PLACEHOLDER}.svc.cluster.local",
    ]
    assert one("Service", SERVICE)["metadata"]["name"] == SERVICE


# -- the Secret in the server pod --------------------------------------------


def tls_volume_and_mount(pod: dict[str, Any], container: dict[str, Any]) -> tuple[Any, Any]:
    """The volume and mount --certfile lives in."""
    cert_dir = PurePosixPath(flag(container["args"], "--certfile")).parent
    (mount,) = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == cert_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return volume, mount


def check_server_tls(deployment: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    volume, mount = tls_volume_and_mount(pod, container)
    # The Secret cert-manager writes is the one mounted.
    assert volume["secret"]["secretName"] == certificate("greeter-tls", docs)["spec"]["secretName"]
    assert "items" not in volume["secret"]  # every key, under cert-manager's names
    # A directory mount: kubelet swaps the files in place on renewal. A subPath
    # mount is a bind mount of one file taken at start: it never rotates.
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert mount["readOnly"] is True
    for option, key in SECRET_KEYS.items():
        if any(a == option or a.startswith(option + "=") for a in args):
            assert flag(args, option) == f"{mount['mountPath']}/{key}", option
    assert flag(args, "--keyfile")  # the certificate needs its key
    # uid 10001 can read the key: group-readable and owned by fsGroup, or world-readable.
    mode = volume["secret"].get("defaultMode", 0o644)
    user = container["securityContext"]["runAsUser"]
    group = container["securityContext"].get("runAsGroup", pod["securityContext"].get("runAsGroup"))
    readable = (mode & 0o040 and pod["securityContext"].get("fsGroup") == group) or mode & 0o004
    assert readable, f"defaultMode {mode:o}: not readable by uid {user}"
    assert not mode & 0o002 and not mode & 0o020, "writable"

    http3 = "--http3" in args
    mtls = any(a.startswith("--client-ca-file") for a in args)
    # serve() refuses client_ca_file with http3 (no QUIC stack verifies client certificates).
    assert not (http3 and mtls)
    udp = [p for p in container["ports"] if p.get("protocol") == "UDP"]
    if http3:
        assert [p["containerPort"] for p in udp] == [int(flag(args, "--port"))]
    else:
        assert udp == []
    service = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == SERVICE]
    (service_doc,) = service
    service_udp = [p for p in service_doc["spec"]["ports"] if p.get("protocol") == "UDP"]
    assert [p["targetPort"] for p in service_udp] == [p["name"] for p in udp]
    # kubelet's grpc probe is plaintext: never on the TLS port, always on the
    # plaintext health-only port (--health-port), which the Service leaves out.
    check_probes(container)
    assert not service_exposes(service_doc, container, health_port(container))


def test_server_mounts_the_certificate_secret_and_uses_it() -> None:
    args = greeter_container()["args"]
    assert "--http3" in args and "--client-ca-file" not in " ".join(args)
    check_server_tls(one("Deployment", "greeter"), load_all())


def test_the_checks_catch_a_sub_path_mount() -> None:
    deployment = one("Deployment", "greeter")
    pod = deployment["spec"]["template"]["spec"]
    _, mount = tls_volume_and_mount(pod, pod["containers"][0])
    mount["subPath"] = "tls.crt"
    with pytest.raises(AssertionError, match="subPath"):
        check_server_tls(deployment, load_all())


def test_the_checks_catch_a_probe_on_the_tls_port() -> None:
    deployment = one("Deployment", "greeter")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["grpc"]["port"] = int(flag(container["args"], "--port"))
    with pytest.raises(AssertionError, match="'port': 50051"):
        check_server_tls(deployment, load_all())


def test_the_checks_catch_a_wrong_secret_name() -> None:
    docs = load_all()
    certificate("greeter-tls", docs)["spec"]["secretName"] = "greeter-tls-v2"
    with pytest.raises(AssertionError):
        check_server_tls(one("Deployment", "greeter"), docs)


# -- the namespace in dnsNames: kustomization.yaml --------------------------


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return data


def test_kustomization_copies_its_namespace_into_every_dns_name() -> None:
    """Static: each dnsName with the placeholder is a replacement target, at the right part."""
    k = kustomization()
    assert k["namespace"]
    (replacement,) = k["replacements"]
    source = replacement["source"]
    assert source["fieldPath"] == "metadata.namespace"
    assert one(source["kind"], source["name"])  # a namespaced object of ours
    (target,) = replacement["targets"]
    assert target["select"]["kind"] == "Certificate"
    names = certificate(target["select"]["name"])["spec"]["dnsNames"]
    with_placeholder = {
        f"spec.dnsNames.{i}" for i, name in enumerate(names) if PLACEHOLDER in name.split(".")
    }
    assert set(target["fieldPaths"]) == with_placeholder
    options = target["options"]
    assert options["delimiter"] == "."
    for path in with_placeholder:
        name = names[int(path.rsplit(".", 1)[1])]
        assert name.split(".")[options["index"]] == PLACEHOLDER, name


def kustomize(directory: Path) -> list[dict[str, Any]]:
    if KUBECTL is None:  # on this project's machines it is; elsewhere, say so loudly
        pytest.fail("kubectl not found: `kubectl kustomize` renders deploy/ (install kubectl)")
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def deploy_copy(tmp_path: Path, extra: str = "") -> Path:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    if extra:
        path = copy / "kustomization.yaml"
        path.write_text(path.read_text() + extra)
    return copy


def check_rendered(docs: list[dict[str, Any]], namespace: str) -> None:
    for doc in docs:
        assert doc["metadata"]["namespace"] == namespace, doc["metadata"]
        if is_cert_manager(doc):
            check_cert_manager(doc)
    names = certificate("greeter-tls", docs)["spec"]["dnsNames"]
    assert names == [
        SERVICE,
        f"{SERVICE}.{namespace}",
        f"{SERVICE}.{namespace}.svc",
        f"{SERVICE}.{namespace}.svc.cluster.local",
    ]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    check_server_tls(deployment, docs)


def validate_core(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    core = [d for d in docs if not is_cert_manager(d)]
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(core))
    assert_all_passed(validate("--strict", "-k", MIN_KUBERNETES, rendered), len(core))


def test_rendered_deploy_names_its_namespace_in_the_certificate(tmp_path: Path) -> None:
    docs = kustomize(DEPLOY)
    check_rendered(docs, kustomization()["namespace"])
    validate_core(docs, tmp_path)


def test_changing_the_namespace_line_changes_the_dns_names(tmp_path: Path) -> None:
    copy = deploy_copy(tmp_path)
    path = copy / "kustomization.yaml"
    path.write_text(re.sub(r"(?m)^namespace: .*$", "namespace: shop", path.read_text()))
    check_rendered(kustomize(copy), "shop")


def test_an_overlay_renaming_the_namespace_must_repeat_the_replacements(tmp_path: Path) -> None:
    """What kustomization.yaml's comment says: a base's replacements run before an overlay's namespace."""
    deploy_copy(tmp_path)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = {"resources": ["../deploy"], "namespace": "shop"}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(base))
    stale = certificate("greeter-tls", kustomize(overlay))["spec"]["dnsNames"]
    assert f"{SERVICE}.{kustomization()['namespace']}.svc.cluster.local" in stale
    repeated = {**base, "replacements": kustomization()["replacements"]}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(repeated))
    check_rendered(kustomize(overlay), "shop")


def test_without_a_namespace_the_build_fails(tmp_path: Path) -> None:
    copy = deploy_copy(tmp_path)
    path = copy / "kustomization.yaml"
    path.write_text(re.sub(r"(?m)^namespace: .*$", "", path.read_text()))
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(copy)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "metadata.namespace" in result.stderr


def test_mtls_component_requires_client_certificates_over_http2_only(tmp_path: Path) -> None:
    copy = deploy_copy(tmp_path, "components:\n  - mtls\n")
    docs = kustomize(copy)
    check_rendered(docs, kustomization()["namespace"])
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--http3" not in args
    assert flag(args, "--client-ca-file") == "/etc/greeter-tls/ca.crt"
    # mTLS is for port 50051 only: the plaintext health port and the grpc
    # probes on it are untouched (check_rendered ran check_probes on them).
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"] == greeter_container()["readinessProbe"]
    assert container["livenessProbe"] == greeter_container()["livenessProbe"]
    assert flag(args, "--health-port") == flag(greeter_container()["args"], "--health-port")
    validate_core(docs, tmp_path)
    # demo.replica accepts the flag the Component adds.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "generated"), str(REPO)]))
    help_text = subprocess.run(
        [sys.executable, "-m", "demo.replica", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=env,
    ).stdout
    assert "--client-ca-file" in help_text


# -- clients and docs --------------------------------------------------------


def test_client_pod_example_mounts_the_client_secret() -> None:
    """client-rbac.yaml's pod example mounts the Secret of greeter-client-tls at the path the docs use."""
    secret = certificate("greeter-client-tls")["spec"]["secretName"]
    rbac = (DEPLOY / "client-rbac.yaml").read_text()
    docs = (REPO / "docs" / "tls.md").read_text()
    assert f"secretName: {secret}" in rbac
    mount = re.search(r"mountPath: (/\S+)", rbac)
    assert mount, "no mountPath in the client pod example"
    assert f'ca_file="{mount.group(1)}/ca.crt"' in docs
    assert f"{mount.group(1)}/tls.crt" in docs and f"{mount.group(1)}/tls.key" in docs


def test_docs_network_policy_admits_the_service_port_not_the_health_port(tmp_path: Path) -> None:
    """docs/tls.md's optional NetworkPolicy: valid, selects the pods, leaves 8081 closed."""
    text = (REPO / "docs" / "tls.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    (policy_text,) = [b for b in blocks if "kind: NetworkPolicy" in b]
    policy = yaml.safe_load(textwrap.dedent(policy_text))
    path = tmp_path / "networkpolicy.yaml"
    path.write_text(yaml.safe_dump(policy))
    assert_all_passed(validate("--strict", "-k", MIN_KUBERNETES, path), 1)
    pod_labels = one("Deployment", "greeter")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    container = greeter_container()
    admitted = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert admitted == {int(flag(container["args"], "--port"))}
    assert health_port(container) not in admitted
