"""dicomgate on AWS: the CDK app (network, storage, service, monitoring) and its configuration."""
