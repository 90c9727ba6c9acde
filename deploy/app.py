#!/usr/bin/env python3
"""The CDK app: ``cdk synth`` / ``cdk deploy`` from deploy/ (see README.md).

The configuration comes from CDK context: ``-c config=FILE`` (JSON or TOML; cdk.json names
config/example.json) and/or ``-c dicomgate='{...}'``. cdk-nag's AwsSolutions and HIPAA.Security
packs run at every synthesis; an unacknowledged finding fails it.
"""

from __future__ import annotations

import sys

from aws_cdk import App

from dicomgate_deploy.config import ConfigError, from_context
from dicomgate_deploy.stack import build


def main() -> None:
    app = App()
    try:
        config = from_context(app.node.try_get_context)
    except ConfigError as exc:
        sys.exit(f"dicomgate deploy: {exc}")
    build(app, config)
    app.synth()


if __name__ == "__main__":
    main()
