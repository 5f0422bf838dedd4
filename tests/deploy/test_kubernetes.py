"""deploy/kubernetes: valid for a pinned Kubernetes (kubernetes-validate --strict), and wired up.

No cluster can be had here, so the manifests are checked twice: against the API schemas of a
pinned Kubernetes version, strictly (an unknown field fails), and for what the schemas cannot
know: GPU limits, probes on the services' real routes, a grace period longer than the drain,
Services that select the pods and reach their port, settings the services really have, Secret keys
and volumes that exist, and a Job whose URLs name the headless Services.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from editor_service.config import EditorSettings
from orchestrator.config import RunSettings
from reward_service.config import RewardSettings
from tests.support.servers import REPO_ROOT

KUBERNETES_VERSION = "1.33.0"
MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
SERVICES = {"editor": ("EDITOR_", EditorSettings), "reward": ("REWARD_", RewardSettings)}
CLOSING_S = 30  # after the drain: the last responses and the workers' stop (service_kit.app.server)


def validator() -> str:
    found = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).with_name("kubernetes-validate")
    )
    assert Path(found).is_file(), "kubernetes-validate is in requirements-dev.txt"
    return found


def validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [validator(), "--strict", "--kubernetes-version", KUBERNETES_VERSION, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def resources() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return found


def one(kind: str, name: str) -> dict[str, Any]:
    (match,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return match


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_manifest_validates_strictly_against_the_pinned_kubernetes() -> None:
    files = sorted(MANIFESTS.glob("*.yaml"))
    assert {f.name for f in files} >= {"editor.yaml", "reward.yaml", "editbench-job.yaml"}
    result = validate(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(resources())


def test_strict_validation_rejects_a_field_kubernetes_does_not_know(tmp_path: Path) -> None:
    """The check above can fail: the same Deployment with one misspelt field does."""
    deployment = one("Deployment", "editor")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    broken = tmp_path / "editor.yaml"
    broken.write_text(yaml.safe_dump(deployment), encoding="utf-8")
    result = validate(broken)
    assert result.returncode != 0
    assert "readinessprobe" in result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_service_deployment_asks_for_gpus_probes_ready_and_health_and_outlasts_its_drain(
    service: str,
) -> None:
    prefix, settings = SERVICES[service]
    pod = one("Deployment", service)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    env = env_of(container)
    drain_s = float(env[f"{prefix}DRAIN_TIMEOUT_S"]["value"])
    assert pod["terminationGracePeriodSeconds"] > drain_s + CLOSING_S
    # every setting it passes is one the service has (a typo would be silently ignored)
    fields = {f"{prefix}{name}".upper() for name in settings.model_fields}
    assert {n for n in env if n.startswith(prefix)} <= fields
    # API keys are a file the service reads (/run/secrets/<prefix>api_keys), from the Secret,
    # under a key it has; never an environment variable
    assert f"{prefix}API_KEYS" not in env
    keys_file = secret_file(pod, container, "/run/secrets")
    assert keys_file == f"{prefix.lower()}api_keys"
    # the model cache is a mounted volume backed by a claim that exists
    volumes = {v["name"]: v for v in pod["volumes"]}
    (cache,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/cache"]
    claim = volumes[cache["name"]]["persistentVolumeClaim"]["claimName"]
    assert one("PersistentVolumeClaim", claim)


@pytest.mark.parametrize("service", SERVICES)
def test_a_normal_and_a_headless_service_reach_the_pods_port(service: str) -> None:
    deployment = one("Deployment", service)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    normal, headless = one("Service", service), one("Service", f"{service}-replicas")
    assert normal["spec"].get("clusterIP") != "None"
    assert headless["spec"]["clusterIP"] == "None"
    for svc in (normal, headless):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names


def test_cli_job_runs_editbench_against_the_headless_services_with_keys_from_the_secret() -> None:
    job = one("Job", "editbench-run")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (container,) = pod["containers"]
    assert container["args"][:2] == ["editbench", "run"]
    env = env_of(container)
    for service, port in (("editor", 8001), ("reward", 8002)):
        assert env[f"EDITBENCH_{service.upper()}_URL"]["value"] == (
            f"http://{service}-replicas:{port}"
        )
        assert one("Service", f"{service}-replicas")["spec"]["ports"][0]["port"] == port
        assert f"EDITBENCH_{service.upper()}_API_KEY" not in env  # a file, not a variable
        path = env[f"EDITBENCH_{service.upper()}_API_KEY_FILE"]["value"]
        folder, name = path.rsplit("/", 1)
        assert secret_file(pod, container, folder, name) == name
    settings = {n[len("EDITBENCH_") :].lower().removesuffix("_file") for n in env}
    assert settings <= set(RunSettings.model_fields)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (runs,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/workspace/runs"]
    assert one("PersistentVolumeClaim", volumes[runs["name"]]["persistentVolumeClaim"]["claimName"])


def secret_file(
    pod: dict[str, Any], container: dict[str, Any], folder: str, name: str | None = None
) -> str:
    """The file a Secret volume mounted at ``folder`` puts there (the one of ``items``, or
    ``name`` from the whole Secret), checked to come from a key the Secret has."""
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = one("Secret", volume["secret"]["secretName"])
    if name is None:
        (item,) = volume["secret"]["items"]
        assert item["key"] in secret["stringData"]
        return str(item["path"])
    assert name in secret["stringData"]
    return name


PODS = [("Deployment", "editor"), ("Deployment", "reward"), ("Job", "editbench-run")]


@pytest.mark.parametrize(("kind", "name"), PODS)
def test_every_pod_meets_the_restricted_pod_security_level_with_a_read_only_root(
    kind: str, name: str
) -> None:
    """What the "restricted" Pod Security Standard requires (kubernetes.io/docs/concepts/
    security/pod-security-standards), checked field by field, plus a read-only root file system
    with its writable places mounted, and no service-account token."""
    assert_restricted(one(kind, name)["spec"]["template"]["spec"])


def assert_restricted(pod: dict[str, Any]) -> None:
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True and pod_context["runAsUser"] != 0
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral"}
    allowed |= {"persistentVolumeClaim", "projected", "secret"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed, volume
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context["capabilities"].get("add")
        assert not context.get("privileged")
        for where in (context, pod_context):
            assert where["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert context["readOnlyRootFilesystem"] is True
        assert context.get("runAsNonRoot", pod_context["runAsNonRoot"]) is True
        mounted = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounted
        for variable in container.get("env", []):  # no secret as an environment variable
            assert "secretKeyRef" not in variable.get("valueFrom", {}), variable["name"]


MUTATIONS = {
    "capabilities kept": lambda c, p: c["securityContext"].pop("capabilities"),
    "writable root": lambda c, p: c["securityContext"].update(readOnlyRootFilesystem=False),
    "escalation": lambda c, p: c["securityContext"].update(allowPrivilegeEscalation=True),
    "no seccomp": lambda c, p: c["securityContext"].pop("seccompProfile"),
    "token mounted": lambda c, p: p.update(automountServiceAccountToken=True),
    "root": lambda c, p: p["securityContext"].update(runAsNonRoot=False),
    "host path": lambda c, p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "key in env": lambda c, p: c.setdefault("env", []).append(
        {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_the_restricted_check_fails_a_pod_that_is_not(mutation: str) -> None:
    """The check above can fail: the editor's pod with any one protection taken away does."""
    pod = one("Deployment", "editor")["spec"]["template"]["spec"]
    MUTATIONS[mutation](pod["containers"][0], pod)
    with pytest.raises((AssertionError, KeyError)):
        assert_restricted(pod)
