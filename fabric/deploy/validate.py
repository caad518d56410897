"""Checks the deployment files offline; run by fabric/tests/deploy.rs.

    validate.py all              every check below, on the files in fabric/deploy
    validate.py kube FILE...     only the Kubernetes schema check, on the given manifests
    validate.py docker FILE      only hadolint, on the given Dockerfile
    validate.py configs DIR      write the node configs of the ConfigMap and the chart to DIR

Checks (each failure is printed; the exit code is 1 if any failed):
- every manifest in kubernetes/ against the Kubernetes JSON schemas, strict (unknown fields are
  errors), for the oldest and newest Kubernetes versions the chart declares (kubernetes-validate
  bundles the schemas);
- the Helm chart: `helm lint --strict` and offline rendering with Helm's own engine
  (helm-python-sdk bundles Helm v4 as a library), the rendered objects validated like the
  manifests, for the default values and for a second set (no voters, no data plane, the
  Secret made by the chart); values.yaml against values.schema.json (jsonschema and Helm's
  check), and values the schema must refuse;
- the chart with the default values renders the same objects as kubernetes/ (pod specs,
  ConfigMap data, Service ports) so the two paths cannot drift apart;
- the Dockerfile with hadolint (warnings fail).
"""

import json
import pathlib
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "nexus"
KUBE_VERSIONS = ["1.29.0", "1.37.0"]

failures = []


def fail(what, why):
    failures.append(f"{what}: {why}")
    print(f"FAIL {what}: {why}", file=sys.stderr)


def validate_objects(what, docs):
    if not docs:
        fail(what, "no Kubernetes object")
    for doc in docs:
        name = f"{what}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except Exception as e:  # ValidationError, SchemaNotFoundError, …
                fail(f"{name} (Kubernetes {version})", str(e).splitlines()[0])
                break
        else:
            print(f"ok   {name} (Kubernetes {', '.join(KUBE_VERSIONS)}, strict)")


def load_yaml_docs(what, text):
    try:
        return [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        fail(what, f"not YAML: {e}")
        return []


def check_kube(files):
    for f in files:
        path = pathlib.Path(f)
        validate_objects(str(path), load_yaml_docs(str(path), path.read_text()))


def check_docker(dockerfile):
    exe = pathlib.Path(sys.executable).parent / "hadolint"
    r = subprocess.run(
        [str(exe), "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        fail(f"hadolint {dockerfile}", (r.stdout + r.stderr).strip())
    else:
        print(f"ok   hadolint {dockerfile}")


def render(helm, values, what):
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="nexus", namespace="nexus", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith(".yaml"):
            docs.extend(load_yaml_docs(f"{what} {path}", text))
    if not any(p.endswith("NOTES.txt") and t.strip() for p, t in out.items()):
        fail(what, "NOTES.txt rendered empty")
    return docs


def by_kind_name(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def check_chart():
    import helm_python as helm

    report = helm.lint(str(CHART), strict=True)
    problems = report.get("errors", []) + [
        f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m["severity"] >= 2
    ]
    if problems:
        fail("helm lint --strict", "; ".join(problems))
    else:
        print("ok   helm lint --strict")

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
        jsonschema.Draft7Validator(schema).validate(values)
        helm.Chart.load(str(CHART)).validate_schema({})
        print("ok   values.yaml against values.schema.json")
    except Exception as e:
        fail("values.yaml against values.schema.json", str(e).splitlines()[0])
    for bad in (
        {"ports": {"gossip": "7946"}},
        {"voters": {"bootstrapExpect": 4}},
        {"secrets": {"create": True, "gossipKey": "short"}},
        {"logFormat": "xml"},
        {"unknownKey": 1},
    ):
        try:
            helm.Chart.load(str(CHART)).validate_schema(bad)
            fail("values.schema.json", f"accepted {bad}")
        except helm.HelmValuesError:
            pass
    print("ok   values.schema.json refuses bad values")

    defaults = render(helm, {}, "chart (default values)")
    validate_objects("chart (default values)", defaults)
    other = {
        "voters": {"enabled": False},
        "ports": {"dataplane": 0},
        "secrets": {
            "create": True,
            "adminToken": "0123456789abcdef0123",
            "gossipKey": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        },
        "tolerations": [{"operator": "Exists"}],
        "extraConfig": "[registry]\nrefresh_ms = 500\n",
    }
    others = render(helm, other, "chart (no voters, no data plane, chart-made Secret)")
    validate_objects("chart (no voters, no data plane, chart-made Secret)", others)
    kinds = sorted(k for k, _ in by_kind_name(others))
    if kinds != ["ConfigMap", "DaemonSet", "Secret", "Service", "ServiceAccount"]:
        fail("chart (no voters, …)", f"objects {kinds}")
    try:
        helm.Chart.load(str(CHART)).render({"secrets": {"create": True}}, name="nexus", namespace="nexus")
        fail("chart", "secrets.create without adminToken rendered")
    except helm.HelmRenderError:
        pass

    # The chart and the plain manifests describe the same fabric.
    plain = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        plain.extend(load_yaml_docs(str(path), path.read_text()))
    plain = by_kind_name(plain)
    rendered = by_kind_name(defaults)
    before = len(failures)
    for key, doc in rendered.items():
        if key not in plain:
            fail("chart vs kubernetes/", f"{key} is not in kubernetes/")
            continue
        mine = plain[key]
        pairs = {
            "DaemonSet": lambda d: (d["spec"]["template"]["spec"], d["spec"]["updateStrategy"]),
            "ConfigMap": lambda d: d["data"],
            "Service": lambda d: {k: v for k, v in d["spec"].items() if k != "selector"},
            "ServiceAccount": lambda d: d.get("automountServiceAccountToken"),
        }
        pick = pairs.get(key[0])
        if pick and pick(doc) != pick(mine):
            a = json.dumps(pick(doc), indent=1, sort_keys=True).splitlines()
            b = json.dumps(pick(mine), indent=1, sort_keys=True).splitlines()
            import difflib

            diff = "\n".join(difflib.unified_diff(b, a, "kubernetes/", "chart", lineterm="", n=1))
            fail("chart vs kubernetes/", f"{key} differs:\n{diff}")
    missing = set(plain) - set(rendered) - {("Namespace", "nexus")}
    if missing:
        fail("chart vs kubernetes/", f"not rendered by the chart: {sorted(missing)}")
    if len(failures) == before:
        print("ok   chart (default values) renders the objects of kubernetes/")


def write_configs(outdir):
    """Writes the node configurations of kubernetes/configmap.yaml and of the chart (with the
    second set of values) as files, for `nexus node check`."""
    import helm_python as helm

    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    docs = load_yaml_docs("configmap.yaml", (DEPLOY / "kubernetes" / "configmap.yaml").read_text())
    chart = helm.Chart.load(str(CHART)).render(
        {"extraConfig": "[registry]\nrefresh_ms = 750\n"}, name="nexus", namespace="nexus"
    )
    docs += load_yaml_docs("chart configmap", chart["nexus/templates/configmap.yaml"])
    for i, doc in enumerate(docs):
        for key, text in doc["data"].items():
            (out / f"{i}-{key}").write_text(text)
            print(out / f"{i}-{key}")


def main(argv):
    if len(argv) >= 2 and argv[0] == "kube":
        check_kube(argv[1:])
    elif len(argv) == 2 and argv[0] == "docker":
        check_docker(argv[1])
    elif len(argv) == 2 and argv[0] == "configs":
        write_configs(argv[1])
    elif argv == ["all"]:
        check_kube(sorted((DEPLOY / "kubernetes").glob("*.yaml")))
        check_chart()
        check_docker(DEPLOY / "docker" / "Dockerfile")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
