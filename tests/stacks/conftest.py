"""The synthesized cloud assembly, built ONCE per test session and shared by every stack test.

``cloud_assembly`` runs ``python app.py`` exactly as a user would (it reads ``cdk.json`` itself), in a
subprocess with every ``AWS_*`` / ``CDK_*`` variable removed: synth must work offline, without an account.
cdk-nag runs inside that synth; a violation makes it exit non-zero after writing the templates and
``validation-report.json``, so the tests can report per stack which rule failed.

Test modules that use it carry ``pytest.mark.xdist_group("synth")`` so that ``pytest -n 2 --dist
loadgroup`` keeps them in one worker (one synth per run). Helpers live in ``cfn_helpers.py``.
"""

from __future__ import annotations

import pytest
from cfn_helpers import Assembly, cdk_context, synth_app


@pytest.fixture(scope="session")
def cloud_assembly(tmp_path_factory) -> Assembly:
    """The app as ``cdk.json`` configures it, synthesized once per session."""
    return synth_app(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def variant_assembly(tmp_path_factory) -> Assembly:
    """The optional branches on (prod, a training schedule, the fast serving image, data capture, canary),
    built in-process from the same stack classes and checked by cdk-nag; only the data, training and serving
    stacks (the ones these options change), to keep the second synth short."""
    from aws_cdk import App, Validations
    from cdk_nag import AwsSolutionsChecks

    from app import read_config, stack_prefix
    from stacks.data_stack import DataStack
    from stacks.serving_stack import ServingStack
    from stacks.training_stack import TrainingStack

    context = cdk_context()
    context["trainserve"] = {
        **context["trainserve"],
        "environment": "prod",
        "training_schedule": "rate(7 days)",
        "serving_image": "fast",
        "data_capture_enabled": True,
        "data_capture_sampling_percent": 50,
        "traffic_routing": "CANARY",
    }
    outdir = tmp_path_factory.mktemp("cdk.out.variant")
    app = App(context=context, outdir=str(outdir))
    config = read_config(app)
    prefix = stack_prefix(config)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    data = DataStack(app, f"{prefix}Data", config=config)
    training = TrainingStack(app, f"{prefix}Training", config=config, data=data)
    ServingStack(app, f"{prefix}Serving", config=config, data=data, training=training)
    try:
        app.synth()
    except RuntimeError as exc:  # cdk-nag violations: ValidationFailed after the templates are written
        return Assembly.load(outdir, 1, str(exc))
    return Assembly.load(outdir, 0, "")
