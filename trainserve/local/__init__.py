"""The local cloud: moto as the AWS control plane, a SageMaker runtime, the approval watcher, the prediction
API, Firehose delivery, the embedded warehouse and the monitoring schedule, in one background process."""
