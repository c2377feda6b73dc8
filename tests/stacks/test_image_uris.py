"""The committed scikit-learn image table equals the SageMaker Python SDK's lookup, region by region."""

from __future__ import annotations

import pytest
from sagemaker.core import image_uris as sdk_image_uris

from stacks.image_uris import SKLEARN_IMAGE_ACCOUNTS, expected_uri

pytestmark = pytest.mark.xdist_group("synth")  # test_synthesized_mapping_equals_the_table shares the synth

ROWS = [(version, region) for version, table in SKLEARN_IMAGE_ACCOUNTS.items() for region in sorted(table)]


@pytest.mark.parametrize("scope", ["training", "inference"])
@pytest.mark.parametrize(("version", "region"), ROWS)
def test_table_matches_the_sdk(version, region, scope):
    sdk = sdk_image_uris.retrieve(
        "sklearn",
        region=region,
        version=version,
        py_version="py3",
        instance_type="ml.m5.large",
        image_scope=scope,
    )
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    assert expected_uri(region, version, suffix) == sdk


def test_table_covers_the_main_commercial_regions():
    for region in ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"):
        assert region in SKLEARN_IMAGE_ACCOUNTS["1.2-1"]


def test_config_framework_versions_all_have_a_table():
    from stacks.config import SKLEARN_FRAMEWORK_VERSIONS

    assert set(SKLEARN_FRAMEWORK_VERSIONS) <= set(SKLEARN_IMAGE_ACCOUNTS)


def test_synthesized_mapping_equals_the_table(cloud_assembly):
    training = cloud_assembly.stack("Training")
    (mapping,) = (
        training["Mappings"].values()
        if len(training["Mappings"]) == 1
        else [m for name, m in training["Mappings"].items() if name.startswith("SklearnImageAccounts")]
    )
    assert {region: row["account"] for region, row in mapping.items()} == SKLEARN_IMAGE_ACCOUNTS["1.2-1"]
