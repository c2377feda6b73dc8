"""Region-independent SageMaker scikit-learn image URIs for environment-agnostic stacks.

The stacks are synthesized without an account or region, so the image URI is resolved by CloudFormation at
deploy time: a ``CfnMapping`` from region to the ECR account that publishes the scikit-learn images, joined with
``AWS::Region`` and ``AWS::URLSuffix``. ``tests/stacks/test_image_uris.py`` checks every row of the table
against the SageMaker Python SDK's own lookup (``sagemaker.core.image_uris.retrieve``).
"""

from __future__ import annotations

from aws_cdk import Aws, CfnMapping, Stack
from constructs import Construct

SKLEARN_REPOSITORY = "sagemaker-scikit-learn"

# ECR account of the scikit-learn 1.2-1 images (training and inference share one repository per region),
# per region of the aws and aws-cn partitions. Source: the SageMaker Python SDK's image_uri_config/sklearn.json.
SKLEARN_IMAGE_ACCOUNTS: dict[str, dict[str, str]] = {
    "1.2-1": {
        "af-south-1": "510948584623",
        "ap-east-1": "651117190479",
        "ap-northeast-1": "354813040037",
        "ap-northeast-2": "366743142698",
        "ap-northeast-3": "867004704886",
        "ap-south-1": "720646828776",
        "ap-south-2": "628508329040",
        "ap-southeast-1": "121021644041",
        "ap-southeast-2": "783357654285",
        "ap-southeast-3": "951798379941",
        "ap-southeast-4": "106583098589",
        "ca-central-1": "341280168497",
        "ca-west-1": "190319476487",
        "cn-north-1": "450853457545",
        "cn-northwest-1": "451049120500",
        "eu-central-1": "492215442770",
        "eu-central-2": "680994064768",
        "eu-north-1": "662702820516",
        "eu-south-1": "978288397137",
        "eu-south-2": "104374241257",
        "eu-west-1": "141502667606",
        "eu-west-2": "764974769150",
        "eu-west-3": "659782779980",
        "il-central-1": "898809789911",
        "me-central-1": "272398656194",
        "me-south-1": "801668240914",
        "sa-east-1": "737474898029",
        "us-east-1": "683313688378",
        "us-east-2": "257758044811",
        "us-west-1": "746614075791",
        "us-west-2": "246618743249",
    }
}

_MAPPING_ID = "SklearnImageAccounts"
_ACCOUNT_KEY = "account"


def sklearn_image_tag(framework_version: str) -> str:
    """The CPU, Python 3 image tag of a scikit-learn framework version (``1.2-1`` -> ``1.2-1-cpu-py3``)."""
    return f"{framework_version}-cpu-py3"


def expected_uri(region: str, framework_version: str, url_suffix: str = "amazonaws.com") -> str:
    """The image URI the table gives for ``region`` (plain strings; used by tests and docs)."""
    account = SKLEARN_IMAGE_ACCOUNTS[framework_version][region]
    return (
        f"{account}.dkr.ecr.{region}.{url_suffix}/{SKLEARN_REPOSITORY}:{sklearn_image_tag(framework_version)}"
    )


def _account(scope: Construct, framework_version: str) -> str:
    """The publishing account for the deploying region (a token), from one mapping per stack."""
    if framework_version not in SKLEARN_IMAGE_ACCOUNTS:
        raise ValueError(f"no scikit-learn image table for framework version {framework_version!r}")
    stack = Stack.of(scope)
    mapping_id = f"{_MAPPING_ID}{framework_version.replace('.', '').replace('-', '')}"
    mapping = stack.node.try_find_child(mapping_id)
    if mapping is None:
        mapping = CfnMapping(
            stack,
            mapping_id,
            mapping={r: {_ACCOUNT_KEY: a} for r, a in SKLEARN_IMAGE_ACCOUNTS[framework_version].items()},
        )
    return mapping.find_in_map(Aws.REGION, _ACCOUNT_KEY)


def sklearn_image_uri(scope: Construct, framework_version: str) -> str:
    """The scikit-learn image URI (training and inference are the same image) in the deploying region."""
    account = _account(scope, framework_version)
    return f"{account}.dkr.ecr.{Aws.REGION}.{Aws.URL_SUFFIX}/{SKLEARN_REPOSITORY}:{sklearn_image_tag(framework_version)}"


def sklearn_repository_arn(scope: Construct, framework_version: str) -> str:
    """The ARN of the ECR repository the image is pulled from (for ``ecr:BatchGetImage`` grants)."""
    account = _account(scope, framework_version)
    return f"arn:{Aws.PARTITION}:ecr:{Aws.REGION}:{account}:repository/{SKLEARN_REPOSITORY}"
