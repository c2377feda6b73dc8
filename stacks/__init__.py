"""The CDK stacks of trainserve (one module per stack) and their shared building blocks."""
