"""The CIDR block Amazon Data Firehose connects from when it delivers to Redshift, per region.

Firehose has no VPC delivery to Redshift: the cluster or workgroup must be publicly accessible, and its
security group must let in the region's Firehose block (one /27 per region) on the Redshift port. The
table is AWS's published list ("Grant Firehose access to an Amazon Redshift destination", Firehose
developer guide, controlling-access.html#using-iam-rs-vpc). A region missing here cannot host the warehouse
stack until its block is added.
"""

from __future__ import annotations

FIREHOSE_REDSHIFT_CIDRS: dict[str, str] = {
    "us-east-1": "52.70.63.192/27",
    "us-east-2": "13.58.135.96/27",
    "us-west-1": "13.57.135.192/27",
    "us-west-2": "52.89.255.224/27",
    "us-gov-east-1": "18.253.138.96/27",
    "us-gov-west-1": "52.61.204.160/27",
    "ca-central-1": "35.183.92.128/27",
    "af-south-1": "13.244.121.224/27",
    "ap-east-1": "18.162.221.32/27",
    "ap-south-1": "13.232.67.32/27",
    "ap-northeast-1": "13.113.196.224/27",
    "ap-northeast-2": "13.209.1.64/27",
    "ap-northeast-3": "13.208.177.192/27",
    "ap-southeast-1": "13.228.64.192/27",
    "ap-southeast-2": "13.210.67.224/27",
    "ap-southeast-3": "108.136.221.64/27",
    "eu-central-1": "35.158.127.160/27",
    "eu-west-1": "52.19.239.192/27",
    "eu-west-2": "18.130.1.96/27",
    "eu-west-3": "35.180.1.96/27",
    "eu-south-1": "15.161.135.128/27",
    "eu-north-1": "13.53.63.224/27",
    "me-south-1": "15.185.91.0/27",
    "sa-east-1": "18.228.1.128/27",
    "cn-north-1": "52.81.151.32/27",
    "cn-northwest-1": "161.189.23.64/27",
}


# Regions of the table where the project still cannot run: CloudFormation has no AWS::SageMaker::
# ModelPackageGroup there (cfn-lint E3006), so the training stack's registry cannot be created.
WITHOUT_MODEL_REGISTRY = frozenset({"cn-north-1", "cn-northwest-1", "us-gov-east-1"})
# The regions the warehouse (and so the project) can be deployed to.
PROJECT_REGIONS: dict[str, str] = {
    r: c for r, c in FIREHOSE_REDSHIFT_CIDRS.items() if r not in WITHOUT_MODEL_REGISTRY
}


class UnsupportedRegionError(ValueError):
    """The warehouse stack was given a region whose Firehose CIDR block is not in the table."""


def firehose_cidr(region: str) -> str:
    """The Firehose → Redshift CIDR block of ``region``; a clear error naming the supported regions otherwise."""
    if region in WITHOUT_MODEL_REGISTRY:
        raise UnsupportedRegionError(
            f"region {region!r} has no SageMaker model registry in CloudFormation "
            "(AWS::SageMaker::ModelPackageGroup), which the training stack needs; supported regions: "
            f"{', '.join(sorted(PROJECT_REGIONS))}"
        )
    try:
        return PROJECT_REGIONS[region]
    except KeyError:
        raise UnsupportedRegionError(
            f"region {region!r} has no known Amazon Data Firehose CIDR block for Redshift destinations, so the "
            f"warehouse cannot be opened to Firehose there; supported regions: "
            f"{', '.join(sorted(PROJECT_REGIONS))}"
        ) from None
