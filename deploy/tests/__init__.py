"""Tests of the CDK app (run by deploy/test in deploy/.venv)."""
