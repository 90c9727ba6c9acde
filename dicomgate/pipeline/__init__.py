"""The asyncio pipeline from spool to destination: validate → de-identify → verify → upload,
then a manifest, links and a notification for each complete study."""

from dicomgate.pipeline._bridge import LoopThread
from dicomgate.pipeline._pipeline import Pipeline
from dicomgate.pipeline.tracker import is_complete
from dicomgate.pipeline.validate import AcceptRules, InstanceMetadata

__all__ = ["AcceptRules", "InstanceMetadata", "LoopThread", "Pipeline", "is_complete"]
