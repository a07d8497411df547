"""Offline validation of the Kubernetes manifests and docker-compose.yml (schemas and wiring)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "kubernetes"
COMPOSE_FILE = REPO / "docker-compose.yml"
SECRETS_GITIGNORE = REPO / "secrets" / ".gitignore"

# Newest Kubernetes release whose JSON schemas kubernetes-validate (pinned 1.37.0) bundles.
K8S_VERSION = "1.37.0"

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
MODEL_SERVER = "onemodel-model-server"
WEB = "onemodel-web"
SECRET = "onemodel-authkey"
IMAGE = "onemodel:latest"
HEALTHCHECK = ["python", "-m", "onemodel.healthcheck"]

Manifest = dict[str, Any]
# docker-compose.yml: two replicas of the model server behind the web tier's pool.
COMPOSE_MODEL_SERVERS = ("model-server-1", "model-server-2")


# ---------------------------------------------------------------- helpers


def manifest_files() -> list[Path]:
    """Every resource manifest in deploy/kubernetes (kustomization.yaml excluded)."""
    files = sorted(K8S_DIR.glob("*.yaml")) + sorted(K8S_DIR.glob("*.yml"))
    return [path for path in files if path.name not in {"kustomization.yaml", "kustomization.yml"}]


@functools.cache
def load_file(path: Path) -> tuple[Manifest, ...]:
    with path.open(encoding="utf-8") as handle:
        return tuple(doc for doc in yaml.safe_load_all(handle) if doc)


def all_resources() -> Iterator[Manifest]:
    for path in manifest_files():
        yield from load_file(path)


def get(kind: str, name: str) -> Manifest:
    found = [r for r in all_resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: Manifest) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def only_container(deployment: Manifest) -> dict[str, Any]:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: expected one container"
    return containers[0]


def all_containers(deployment: Manifest) -> list[dict[str, Any]]:
    spec = pod_spec(deployment)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def deployments() -> list[Manifest]:
    return [r for r in all_resources() if r["kind"] == "Deployment"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels/matchExpressions, or a plain map) matches labels."""
    match_labels = selector.get("matchLabels", {}) if _is_structured(selector) else selector
    if not all(labels.get(key) == value for key, value in match_labels.items()):
        return False
    for expression in selector.get("matchExpressions", []) if _is_structured(selector) else []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return bool(match_labels) or bool(selector.get("matchExpressions"))


def _is_structured(selector: dict[str, Any]) -> bool:
    return "matchLabels" in selector or "matchExpressions" in selector


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a named or numbered port against a container's ports; fail if absent."""
    for item in container.get("ports", []):
        if port in (item.get("name"), item["containerPort"]):
            return int(item["containerPort"])
    raise AssertionError(f"port {port!r} is not declared by container {container['name']}")


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), f"{address!r} is not host:port"
    return host, int(port)


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_UNITS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def memory_bytes(quantity: str | int) -> float:
    match = _QUANTITY.match(str(quantity))
    assert match, f"unparsable memory quantity {quantity!r}"
    return float(match.group(1)) * _UNITS[match.group(2)]


# ---------------------------------------------------------------- schema validation


def test_kubernetes_validate_bundles_the_pinned_schema_version() -> None:
    assert kubernetes_validate.latest_version() == K8S_VERSION


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_manifest_validates_against_kubernetes_schema(path: Path) -> None:
    documents = load_file(path)
    assert documents, f"{path.name} holds no resource"
    for document in documents:
        problem = ""
        try:
            validated = kubernetes_validate.validate(document, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            problem = f"{path.name}: {document['kind']}: {where}: {error.message}"
        if problem:
            pytest.fail(problem, pytrace=False)
        assert validated == "1.37"


def test_expected_resources_exist() -> None:
    kinds = {(r["kind"], r["metadata"]["name"]) for r in all_resources()}
    assert kinds >= {
        ("Secret", SECRET),
        ("Deployment", MODEL_SERVER),
        ("Service", MODEL_SERVER),
        ("NetworkPolicy", MODEL_SERVER),
        ("Deployment", WEB),
        ("Service", WEB),
        ("HorizontalPodAutoscaler", WEB),
        ("PodDisruptionBudget", WEB),
        ("HorizontalPodAutoscaler", MODEL_SERVER),
        ("PodDisruptionBudget", MODEL_SERVER),
    }


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "duplicate entries in kustomization resources"
    assert sorted(listed) == sorted(path.name for path in manifest_files())
    assert "namespace" not in kustomization


def test_namespace_agnostic_and_labelled() -> None:
    for resource in all_resources():
        metadata = resource["metadata"]
        assert "namespace" not in metadata, f"{resource['kind']}/{metadata['name']}"
        labels = metadata.get("labels", {})
        assert labels.get(NAME_LABEL) == "onemodel", f"{resource['kind']}/{metadata['name']}"
        assert labels.get(COMPONENT_LABEL) in {"model-server", "web"}
    for deployment in deployments():
        component = deployment["metadata"]["labels"][COMPONENT_LABEL]
        assert pod_labels(deployment) == {NAME_LABEL: "onemodel", COMPONENT_LABEL: component}
        assert selects(deployment["spec"]["selector"], pod_labels(deployment))


# ---------------------------------------------------------------- workloads


def test_workload_commands_and_images() -> None:
    server = only_container(get("Deployment", MODEL_SERVER))
    web = only_container(get("Deployment", WEB))
    assert server["image"] == web["image"] == IMAGE
    assert server["command"] == ["onemodel", "model-server"]
    assert web["command"] == ["onemodel", "serve"]
    assert env_of(server)["MODEL_WEIGHTS"] == "imagenet"
    assert int(env_of(server)["MAX_BATCH_SIZE"]) >= 1
    web_env = env_of(web)
    assert (web_env["WEB_CONCURRENCY"], web_env["WEB_THREADS"]) == ("2", "8")
    assert get("Deployment", WEB)["spec"]["replicas"] == 2
    assert pod_spec(get("Deployment", MODEL_SERVER))["terminationGracePeriodSeconds"] == 30
    # HTTP drains (30 s), then gRPC (30 s), then a margin.
    assert pod_spec(get("Deployment", WEB))["terminationGracePeriodSeconds"] == 65


def test_web_and_model_server_share_the_authkey_secret() -> None:
    secret = get("Secret", SECRET)
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    key_files = set()
    for deployment in (get("Deployment", MODEL_SERVER), get("Deployment", WEB)):
        container = only_container(deployment)
        key_file = Path(env_of(container)["MODEL_SERVER_AUTHKEY_FILE"])
        assert "MODEL_SERVER_AUTHKEY" not in env_of(container), "key must not be in the env"
        volumes = {volume["name"]: volume for volume in pod_spec(deployment)["volumes"]}
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == str(key_file.parent)]
        assert len(mounts) == 1, f"{deployment['metadata']['name']}: no mount at {key_file.parent}"
        assert mounts[0].get("readOnly") is True
        source = volumes[mounts[0]["name"]]["secret"]
        assert source["secretName"] == SECRET
        assert source["defaultMode"] == 0o400
        assert key_file.name in keys, f"Secret {SECRET} has no key {key_file.name!r}"
        key_files.add(key_file)
    assert key_files == {Path("/var/run/secrets/onemodel/authkey")}


def test_secret_placeholder_explains_how_to_generate_a_key() -> None:
    text = (K8S_DIR / "secret.yaml").read_text(encoding="utf-8")
    assert 'python -c "import secrets; print(secrets.token_hex(32))"' in text


def test_model_server_service_reaches_the_model_server_pods() -> None:
    deployment = get("Deployment", MODEL_SERVER)
    service = get("Service", MODEL_SERVER)
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    assert not selects(service["spec"]["selector"], pod_labels(get("Deployment", WEB)))
    (port,) = service["spec"]["ports"]
    container = only_container(deployment)
    listen_host, listen_port = split_address(env_of(container)["MODEL_SERVER_ADDRESS"])
    assert listen_host == "0.0.0.0"
    assert container_port(container, port["targetPort"]) == listen_port == port["port"] == 7000


def test_web_service_reaches_the_web_pods() -> None:
    deployment = get("Deployment", WEB)
    service = get("Service", WEB)
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    assert not selects(service["spec"]["selector"], pod_labels(get("Deployment", MODEL_SERVER)))
    http, grpc = service["spec"]["ports"]
    container = only_container(deployment)
    assert http["port"] == 80
    assert container_port(container, http["targetPort"]) == int(env_of(container)["PORT"])
    assert grpc["port"] == 8001 and grpc["appProtocol"] == "kubernetes.io/h2c"
    assert container_port(container, grpc["targetPort"]) == int(env_of(container)["GRPC_PORT"])
    # onemodel.master.config binds HOST:PORT and defaults HOST to loopback.
    assert env_of(container)["HOST"] == "0.0.0.0"


def test_web_points_at_every_model_server_through_dns() -> None:
    web_env = env_of(only_container(get("Deployment", WEB)))
    address = web_env["MODEL_SERVER_ADDRESS"]
    # The pool form: resolved to every ready pod and re-resolved, so replicas join and leave.
    assert address.startswith("dns:"), address
    host, port = split_address(address.removeprefix("dns:"))
    service = get("Service", MODEL_SERVER)
    assert host == service["metadata"]["name"]
    assert port in [item["port"] for item in service["spec"]["ports"]]
    assert 1 <= float(web_env["MODEL_SERVER_RESOLVE_S"]) <= 30


def test_model_server_service_is_headless() -> None:
    # A ClusterIP would balance connections; headless DNS lists every ready pod.
    spec = get("Service", MODEL_SERVER)["spec"]
    assert spec["clusterIP"] == "None"
    assert not spec.get("publishNotReadyAddresses", False), "only ready pods get requests"


def test_model_server_hpa_and_pdb() -> None:
    hpa = get("HorizontalPodAutoscaler", MODEL_SERVER)
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        MODEL_SERVER,
    )
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"
    for container in all_containers(get("Deployment", MODEL_SERVER)):
        assert "cpu" in container["resources"]["requests"]
    assert get("Deployment", MODEL_SERVER)["spec"]["replicas"] == spec["minReplicas"]
    pdb = get("PodDisruptionBudget", MODEL_SERVER)["spec"]
    assert selects(pdb["selector"], pod_labels(get("Deployment", MODEL_SERVER)))
    assert not selects(pdb["selector"], pod_labels(get("Deployment", WEB)))
    assert pdb["minAvailable"] < spec["minReplicas"], "a drain must be able to proceed"


def test_model_server_drains_within_its_grace_period() -> None:
    deployment = get("Deployment", MODEL_SERVER)
    drain_s = float(env_of(only_container(deployment))["MODEL_SERVER_DRAIN_TIMEOUT_S"])
    assert 0 < drain_s < pod_spec(deployment)["terminationGracePeriodSeconds"]


def test_network_policy_admits_only_web_to_the_model_server() -> None:
    policy = get("NetworkPolicy", MODEL_SERVER)["spec"]
    server_labels = pod_labels(get("Deployment", MODEL_SERVER))
    web_labels = pod_labels(get("Deployment", WEB))
    assert selects(policy["podSelector"], server_labels)
    assert not selects(policy["podSelector"], web_labels)
    assert "Ingress" in policy["policyTypes"]
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}, "no namespaceSelector/ipBlock: same-namespace web only"
    assert selects(peer["podSelector"], web_labels)
    assert not selects(peer["podSelector"], server_labels)
    (port,) = rule["ports"]
    assert port.get("protocol", "TCP") == "TCP"
    assert port["port"] == 7000
    assert container_port(only_container(get("Deployment", MODEL_SERVER)), port["port"]) == 7000


def test_web_probes_hit_health_endpoints_on_the_container_port() -> None:
    container = only_container(get("Deployment", WEB))
    http_port = int(env_of(container)["PORT"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        action = container[probe]["httpGet"]
        assert action["path"] == path
        assert container_port(container, action["port"]) == http_port == 8000
    assert container_port(container, "http") == 8000


def test_model_server_probes() -> None:
    container = only_container(get("Deployment", MODEL_SERVER))
    assert container["readinessProbe"]["exec"]["command"] == HEALTHCHECK
    assert container_port(container, container["livenessProbe"]["tcpSocket"]["port"]) == 7000
    startup = container["startupProbe"]
    budget_s = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget_s >= 180, "the model needs several minutes to load"


def test_hpa_scales_the_web_deployment() -> None:
    hpa = get("HorizontalPodAutoscaler", WEB)
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", WEB)
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # CPU utilisation is relative to requests: every web container must request CPU.
    for container in all_containers(get("Deployment", WEB)):
        assert "cpu" in container["resources"]["requests"]


def test_pod_disruption_budget_protects_web_without_blocking_drains() -> None:
    pdb = get("PodDisruptionBudget", WEB)["spec"]
    assert selects(pdb["selector"], pod_labels(get("Deployment", WEB)))
    assert not selects(pdb["selector"], pod_labels(get("Deployment", MODEL_SERVER)))
    assert pdb["minAvailable"] < get("HorizontalPodAutoscaler", WEB)["spec"]["minReplicas"]


@pytest.mark.parametrize("name", [MODEL_SERVER, WEB])
def test_containers_are_limited_and_unprivileged(name: str) -> None:
    deployment = get("Deployment", name)
    pod_context = pod_spec(deployment).get("securityContext", {})
    volumes = {volume["name"]: volume for volume in pod_spec(deployment).get("volumes", [])}
    for container in all_containers(deployment):
        resources = container["resources"]
        limit = memory_bytes(resources["limits"]["memory"])
        assert memory_bytes(resources["requests"]["memory"]) <= limit
        context = {**pod_context, **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True
        assert context.get("runAsUser", 0) != 0
        assert context.get("allowPrivilegeEscalation") is False
        assert context.get("readOnlyRootFilesystem") is True
        assert "ALL" in context.get("capabilities", {}).get("drop", [])
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert set(mounts.values()) <= set(volumes), "a volumeMount names an undefined volume"
        # /tmp is the only writable place (Keras falls back to /tmp/.keras). Nothing may be
        # mounted over /home/app/.keras: it would hide the weights baked into the image.
        assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be an emptyDir"
        assert "/home/app/.keras" not in mounts


def test_model_server_resources() -> None:
    resources = only_container(get("Deployment", MODEL_SERVER))["resources"]
    assert str(resources["requests"]["cpu"]) == "2"
    assert memory_bytes(resources["requests"]["memory"]) == 3 * 2**30
    assert memory_bytes(resources["limits"]["memory"]) == 4 * 2**30


# ---------------------------------------------------------------- docker compose


@functools.lru_cache(maxsize=1)
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def compose_secret_paths(service: dict[str, Any]) -> dict[str, str]:
    """Map each secret a service uses to the path it appears at in the container."""
    paths = {}
    for item in service.get("secrets", []):
        if isinstance(item, str):
            paths[item] = f"/run/secrets/{item}"
        else:
            target = item.get("target", item["source"])
            paths[item["source"]] = target if target.startswith("/") else f"/run/secrets/{target}"
    return paths


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host_ip, published, target) for each port; an empty host_ip means all interfaces."""
    result = []
    for item in service.get("ports", []):
        if isinstance(item, dict):
            host_ip = str(item.get("host_ip", ""))
            result.append((host_ip, int(item["published"]), int(item["target"])))
            continue
        spec = str(item).split("/", 1)[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            result.append((parts[0].strip("[]"), int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            result.append(("", int(parts[0]), int(parts[1])))
        else:
            result.append(("", 0, int(parts[0])))
    return result


def test_compose_services_and_commands() -> None:
    services = compose()["services"]
    assert set(services) == {*COMPOSE_MODEL_SERVERS, "web"}
    web = services["web"]
    for name in COMPOSE_MODEL_SERVERS:
        server = services[name]
        assert server["image"] == web["image"] == IMAGE
        build = server["build"]
        assert build in (".", {"context": "."}) or build.get("context") == "."
        assert compose_command(server) == ["onemodel", "model-server"]
    assert compose_command(web) == ["onemodel", "serve"]


def test_compose_authkey_secret_is_declared_and_used_by_both() -> None:
    document = compose()
    assert document["secrets"]["onemodel_authkey"] == {"file": "./secrets/authkey"}
    for name in (*COMPOSE_MODEL_SERVERS, "web"):
        service = document["services"][name]
        paths = compose_secret_paths(service)
        assert "onemodel_authkey" in paths, f"{name} does not use the authkey secret"
        env = compose_env(service)
        assert env["MODEL_SERVER_AUTHKEY_FILE"] == paths["onemodel_authkey"]
        assert env["MODEL_SERVER_AUTHKEY_FILE"] == "/run/secrets/onemodel_authkey"
        assert "MODEL_SERVER_AUTHKEY" not in env


@pytest.mark.parametrize("name", COMPOSE_MODEL_SERVERS)
def test_compose_model_server_is_healthchecked_and_private(name: str) -> None:
    services = compose()["services"]
    server = services[name]
    test = server["healthcheck"]["test"]
    command = test[1:] if test[0] in ("CMD", "CMD-SHELL") else test
    if test[0] == "CMD-SHELL":
        command = command[0].split()
    assert command == HEALTHCHECK
    assert not server.get("ports"), "the model server must not publish ports"
    assert services["web"]["depends_on"][name]["condition"] == "service_healthy"
    drain_s = float(compose_env(server)["MODEL_SERVER_DRAIN_TIMEOUT_S"])
    assert drain_s < float(str(server["stop_grace_period"]).removesuffix("s"))


def test_compose_web_publishes_on_loopback_only() -> None:
    web = compose()["services"]["web"]
    ports = published_ports(web)
    assert ports, "web publishes no port"
    environment = compose_env(web)
    assert (
        {target for _, _, target in ports}
        == {
            int(environment["PORT"]),
            int(environment["GRPC_PORT"]),
        }
        == {8000, 8001}
    )
    for host_ip, published, target in ports:
        assert host_ip == "127.0.0.1"
        assert published == target
    assert compose_env(web)["HOST"] == "0.0.0.0", "Gunicorn must listen beyond the container"


def test_compose_web_pools_every_model_server() -> None:
    services = compose()["services"]
    pool = compose_env(services["web"])["MODEL_SERVER_ADDRESS"].split(",")
    assert [split_address(item)[0] for item in pool] == list(COMPOSE_MODEL_SERVERS)
    for name, item in zip(COMPOSE_MODEL_SERVERS, pool, strict=True):
        server_host, server_port = split_address(
            compose_env(services[name])["MODEL_SERVER_ADDRESS"]
        )
        assert server_host == "0.0.0.0"
        assert split_address(item)[1] == server_port


def test_secrets_directory_is_never_committed() -> None:
    lines = SECRETS_GITIGNORE.read_text(encoding="utf-8").split()
    assert lines == ["*", "!.gitignore"]
    secret_file = (REPO / compose()["secrets"]["onemodel_authkey"]["file"]).resolve()
    assert secret_file.parent == SECRETS_GITIGNORE.parent
