"""The Kubernetes manifests, tested without a cluster: every variant renders with `kubectl kustomize`, every object
validates strictly against the Kubernetes schemas (kubernetes-validate), and the objects agree with each other and
with the server: probe and Service ports with the --port flag, selectors with the pod labels, the grace period with
the drain, the scrape annotations with --metrics-port, the HPA metric with the server's gauge and the
prometheus-adapter rule, and the container's arguments with the real `onnxplain serve` parser.

KServe's InferenceService is a custom resource the schemas do not cover: its pod spec is validated as a Pod, the
rest structurally.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from onnxplain.server.observability.metrics import IN_FLIGHT

# The oldest Kubernetes the manifests promise to work on (native gRPC probes are GA since 1.27), and the newest the
# validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
GPU = "nvidia.com/gpu"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# Seconds between the drain's end and the kubelet's SIGKILL: the process still has to stop its executor and exit.
EXIT_MARGIN_S = 5

# Variant name -> (overlay, components added on top).
VARIANTS = {
    "cpu": ("overlays/cpu", ()),
    "gpu": ("overlays/gpu", ()),
    "cpu-tls": ("overlays/cpu", ("components/tls",)),
    "gpu-tls-models-from-image": ("overlays/gpu", ("components/tls", "components/models-from-image")),
}

Object = dict[str, Any]


@dataclass
class Rendered:
    name: str
    objects: list[Object]

    def all(self, kind: str) -> list[Object]:
        return [item for item in self.objects if item["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Object:
        [found] = [item for item in self.all(kind) if name is None or item["metadata"]["name"] == name]
        return found

    @property
    def pod(self) -> Object:
        return self.one("Deployment")["spec"]["template"]

    @property
    def server(self) -> Object:
        [container] = self.pod["spec"]["containers"]
        return container


def render(kubectl: str, k8s: Path, overlay: str, components: tuple[str, ...], scratch: Path) -> list[Object]:
    """`kubectl kustomize` of the overlay, with components through a kustomization that names them (relative
    paths: kustomize refuses absolute ones)."""
    if components:
        folder = scratch / "variant"
        folder.mkdir()
        overlay_path, *component_paths = (os.path.relpath(k8s / part, folder) for part in (overlay, *components))
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [overlay_path],
            "components": component_paths,
        }
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        target = folder
    else:
        target = k8s / overlay
    result = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [item for item in yaml.safe_load_all(result.stdout) if item]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request, deploy_dir, tool, tmp_path_factory) -> Rendered:
    overlay, components = VARIANTS[request.param]
    scratch = tmp_path_factory.mktemp(request.param)
    return Rendered(request.param, render(tool("kubectl"), deploy_dir / "k8s", overlay, components, scratch))


@pytest.fixture(scope="module")
def serve_arguments(onnxplain_cli):
    """The server's parsed command line: the image's ENTRYPOINT (`onnxplain serve`, the container sets no command)
    plus the container's args, with each $(VARIABLE) taken from the ConfigMap the container loads, as the kubelet
    does."""

    def parse(rendered: Rendered):
        container = rendered.server
        assert "command" not in container, "the image's ENTRYPOINT must stay `onnxplain serve`"
        environment = {}
        for source in container.get("envFrom", []):
            environment |= rendered.one("ConfigMap", source["configMapRef"]["name"])["data"]
        arguments = [
            re.sub(r"\$\((\w+)\)", lambda match: environment[match.group(1)], arg) for arg in container["args"]
        ]
        return onnxplain_cli("serve", arguments)

    return parse


def mounts(container: Object) -> dict[str, Object]:
    return {mount["name"]: mount for mount in container.get("volumeMounts", [])}


def volumes(pod: Object) -> dict[str, Object]:
    return {volume["name"]: volume for volume in pod["spec"].get("volumes", [])}


def port_named(container: Object, name: str) -> int:
    [port] = [port["containerPort"] for port in container["ports"] if port["name"] == name]
    return port


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def load_healthcheck(deploy_dir: Path):
    spec = importlib.util.spec_from_file_location("onnxplain_healthcheck", deploy_dir / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def drain_seconds(container: Object, shutdown_grace_s: float) -> float:
    """preStop sleep (the endpoint removal propagating) + the server's grace for calls in flight."""
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    return float(command[1]) + shutdown_grace_s


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(rendered, version):
    for item in rendered.objects:
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{rendered.name}: {item['kind']} {item['metadata']['name']}: {error.message} at {error.path}")


def test_the_objects_an_operator_expects(rendered):
    kinds = sorted(item["kind"] for item in rendered.objects)
    storage = [] if "models-from-image" in rendered.name else ["PersistentVolumeClaim"]
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Service"]
    assert kinds == sorted([*expected, *storage, "ServiceAccount"])
    assert {item["metadata"].get("namespace") for item in rendered.objects} == {"onnxplain"}


def test_probes_services_and_the_server_use_one_port(rendered, serve_arguments, deploy_dir):
    port = serve_arguments(rendered).port
    container = rendered.server
    assert port_named(container, "grpc") == port
    for probe in PROBES:
        handler = container[probe]
        if "grpc" in handler:
            # The kubelet's gRPC probe: plain text, the whole server's health (service "").
            assert handler["grpc"]["port"] == port
            assert handler["grpc"].get("service", "") == ""
        else:
            # Under TLS: the image's health check over TLS, against the same port.
            program, *arguments = handler["exec"]["command"]
            assert program == "onnxplain-healthcheck"
            parsed = load_healthcheck(deploy_dir).parse_arguments(arguments)
            assert parsed.address.rpartition(":")[2] == str(port)
            assert parsed.ca_file.parent == Path(mounts(container)["tls"]["mountPath"])
    for service in rendered.all("Service"):
        [service_port] = service["spec"]["ports"]
        assert service_port["name"] == "grpc" and service_port["appProtocol"] == "grpc"
        assert service_port["targetPort"] == "grpc"
    headless = rendered.one("Service", "onnxplain-headless")
    assert headless["spec"]["clusterIP"] == "None"


def test_selectors_match_the_pod_labels(rendered):
    deployment = rendered.one("Deployment")
    labels = rendered.pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selects(selector, labels)
    for service in rendered.all("Service"):
        assert selects(service["spec"]["selector"], labels), service["metadata"]["name"]
    assert rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    for constraint in rendered.pod["spec"]["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"]["matchLabels"], labels)
    target = rendered.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}


def test_the_gpu_variants_ask_for_one_gpu_and_tolerate_gpu_nodes(rendered, serve_arguments):
    resources = rendered.server["resources"]
    tolerations = rendered.pod["spec"].get("tolerations", [])
    if rendered.name.startswith("gpu"):
        assert resources["limits"][GPU] == 1
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in tolerations
        assert serve_arguments(rendered).device == "cuda"
        assert rendered.server["image"].endswith("-gpu")
    else:
        assert GPU not in resources.get("limits", {}) and GPU not in resources.get("requests", {})
        assert serve_arguments(rendered).device == "cpu"
        assert rendered.server["image"].endswith("-cpu")


def test_the_grace_period_outlasts_the_drain(rendered, serve_arguments):
    arguments = serve_arguments(rendered)
    grace_period = rendered.pod["spec"]["terminationGracePeriodSeconds"]
    assert grace_period >= drain_seconds(rendered.server, arguments.shutdown_grace_s) + EXIT_MARGIN_S
    # Connections age out, so clients behind kube-proxy rebalance and DNS clients find new replicas.
    assert arguments.max_connection_age_ms > 0


def test_the_arguments_point_at_the_mounted_files(rendered, serve_arguments):
    arguments = serve_arguments(rendered)
    container = rendered.server
    container_mounts = mounts(container)
    pod_volumes = volumes(rendered.pod)
    assert container_mounts["models"]["mountPath"] == str(arguments.model_repository)
    assert container_mounts["models"]["readOnly"] is True
    assert arguments.tokens_file.parent == Path(container_mounts["tokens"]["mountPath"])
    assert pod_volumes["tokens"]["secret"]["secretName"] == "onnxplain-tokens"
    if "tls" in rendered.name:
        tls = Path(container_mounts["tls"]["mountPath"])
        assert arguments.tls_cert.parent == tls and arguments.tls_key.parent == tls
        assert pod_volumes["tls"]["secret"]["secretName"] == "onnxplain-tls"
    else:
        assert arguments.tls_cert is None and "tls" not in pod_volumes
    if "models-from-image" in rendered.name:
        [init] = rendered.pod["spec"]["initContainers"]
        assert "emptyDir" in pod_volumes["models"]
        # The init container fills the folder the server's mount reads.
        target = mounts(init)["models"]["mountPath"]
        assert f"{target}/{container_mounts['models']['subPath']}/" in " ".join(init["command"])
    else:
        claim = pod_volumes["models"]["persistentVolumeClaim"]["claimName"]
        assert rendered.one("PersistentVolumeClaim", claim)


def test_onnx_runtime_threads_fit_the_cpu_request(rendered, serve_arguments):
    cpu_request = float(rendered.server["resources"]["requests"]["cpu"])
    assert 0 < serve_arguments(rendered).threads <= cpu_request


def test_prometheus_scrapes_the_metrics_port(rendered, serve_arguments):
    metrics_port = serve_arguments(rendered).metrics_port
    annotations = rendered.pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert port_named(rendered.server, "metrics") == metrics_port


def test_the_hpa_scales_on_the_servers_in_flight_gauge_through_the_adapter_rule(rendered, deploy_dir):
    metrics = rendered.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    [pods] = [metric["pods"] for metric in metrics if metric["type"] == "Pods"]
    [cpu] = [metric["resource"] for metric in metrics if metric["type"] == "Resource"]
    assert pods["metric"]["name"] == IN_FLIGHT._name
    assert pods["target"]["type"] == "AverageValue"
    assert cpu["name"] == "cpu" and cpu["target"]["type"] == "Utilization"
    assert "cpu" in rendered.server["resources"]["requests"], "CPU utilisation is measured against the request"

    rules = yaml.safe_load((deploy_dir / "k8s" / "prometheus-adapter-rules.yaml").read_text())["rules"]
    [rule] = [rule for rule in rules if rule["name"]["as"] == pods["metric"]["name"]]
    assert re.match(rule["name"]["matches"], IN_FLIGHT._name)
    assert rule["seriesQuery"].startswith(IN_FLIGHT._name + "{")
    assert {override["resource"] for override in rule["resources"]["overrides"].values()} == {"namespace", "pod"}


def test_containers_run_locked_down(rendered, deploy_dir):
    pod_spec = rendered.pod["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    # The user the images create (USER 10001:10001), so files the image owns stay readable.
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (deploy_dir / "Dockerfile").read_text(), re.MULTILINE)
    assert pod_spec["securityContext"]["runAsUser"] == int(dockerfile_user.group(1))
    assert pod_spec["automountServiceAccountToken"] is False
    for container in [*pod_spec["containers"], *pod_spec.get("initContainers", [])]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "memory" in container["resources"]["limits"]
    # The only writable place under the read-only root filesystem.
    [scratch] = [mount["name"] for mount in mounts(rendered.server).values() if mount["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes(rendered.pod)[scratch]


def test_the_kserve_predictor(deploy_dir, onnxplain_cli):
    service = yaml.safe_load((deploy_dir / "kserve" / "inferenceservice.yaml").read_text())
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    predictor = dict(service["spec"]["predictor"])
    replicas = predictor.pop("minReplicas"), predictor.pop("maxReplicas")
    assert 1 <= replicas[0] <= replicas[1]
    # Everything else in the predictor is a pod spec: validate it as one.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": predictor}
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)

    [container] = predictor["containers"]
    assert container["name"] == "kserve-container" and "command" not in container
    arguments = onnxplain_cli("serve", container["args"])
    # KServe and Knative route gRPC only to one port, named h2c.
    [port] = container["ports"]
    assert port["name"] == "h2c" and port["containerPort"] == arguments.port
    for probe in PROBES:
        assert container[probe]["grpc"]["port"] == arguments.port
    # KServe's storage initializer puts STORAGE_URI's content there.
    assert arguments.model_repository == Path("/mnt/models")
    assert {variable["name"] for variable in container["env"]} >= {"STORAGE_URI", "ONNXPLAIN_CALLER_TOKENS"}
    assert container["resources"]["limits"][GPU] == 1 and arguments.device == "cuda"
    drain = drain_seconds(container, arguments.shutdown_grace_s)
    assert predictor["terminationGracePeriodSeconds"] >= drain + EXIT_MARGIN_S


def test_the_audit_job_fans_out_over_the_headless_service(rendered, deploy_dir, onnxplain_cli):
    job = yaml.safe_load((deploy_dir / "k8s" / "examples" / "audit-job.yaml").read_text())
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    pod_spec = job["spec"]["template"]["spec"]
    [container] = pod_spec["containers"]
    program, command = container["command"]
    assert program == "onnxplain"
    arguments = onnxplain_cli(command, container["args"])
    headless = rendered.one("Service", "onnxplain-headless")
    [port] = headless["spec"]["ports"]
    name, namespace = headless["metadata"]["name"], headless["metadata"]["namespace"]
    assert arguments.server == f"dns:///{name}.{namespace}.svc.cluster.local:{port['port']}"
    # Every replica gets images, and an image whose replica went away is retried on another.
    assert arguments.load_balancing == "round_robin" and arguments.retries
    assert arguments.concurrency > 1
    job_mounts = mounts(container)
    assert arguments.out.is_relative_to(job_mounts["data"]["mountPath"])
    assert "emptyDir" in volumes(job["spec"]["template"])[job_mounts["tmp"]["name"]]
    assert job_mounts["tmp"]["mountPath"] == "/tmp" and container["securityContext"]["readOnlyRootFilesystem"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
