"""The state store: what the nodes hold, per instance, per study and per node.

Every instance a node acknowledged has one row per version, keyed by (SOP Instance UID,
version); its ``state`` moves ``received → processed → uploaded → delivered`` or ends
``quarantined`` with a reason (or ``superseded`` by a newer version). The interface is
:class:`StateStore` (``_protocol``); :func:`open_state` picks the backend the settings name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from dicomgate.state._protocol import (
    DEFAULT_HEARTBEAT_TTL,
    DEFAULT_LEASE_SECONDS,
    MAX_BATCH,
    PROCESSED_FIELDS,
    WORK_STATES,
    Admission,
    AdmitOutcome,
    Claim,
    Commitment,
    CommitmentLease,
    CommitmentRef,
    CommitmentState,
    Expectation,
    InstanceKey,
    InstanceRecord,
    InstanceState,
    Lease,
    LeaseLost,
    MppsRecord,
    MppsUpdate,
    NodeRecord,
    Publication,
    StateError,
    StateStore,
    StudyProgress,
    StudyRecord,
    completion_rule,
    study_state,
)

if TYPE_CHECKING:
    from dicomgate.config import Settings

__all__ = [
    "DEFAULT_HEARTBEAT_TTL",
    "DEFAULT_LEASE_SECONDS",
    "MAX_BATCH",
    "PROCESSED_FIELDS",
    "WORK_STATES",
    "Admission",
    "AdmitOutcome",
    "Claim",
    "Commitment",
    "CommitmentLease",
    "CommitmentRef",
    "CommitmentState",
    "Expectation",
    "InstanceKey",
    "InstanceRecord",
    "InstanceState",
    "Lease",
    "LeaseLost",
    "MppsRecord",
    "MppsUpdate",
    "NodeRecord",
    "Publication",
    "StateError",
    "StateStore",
    "StudyProgress",
    "StudyRecord",
    "completion_rule",
    "is_shared",
    "open_state",
    "study_state",
]

_DYNAMODB = "dynamodb://"


def is_shared(settings: Settings) -> bool:
    """Whether the store may be shared by nodes on other hosts (then every node needs the same
    explicit key: issue 8, item 4)."""
    return settings.state.startswith(_DYNAMODB)


def open_state(settings: Settings, *, readonly: bool = False, create: bool = True) -> StateStore:
    """The state store ``DICOMGATE_STATE`` names: ``sqlite`` (default; under the data
    directory) or ``dynamodb://TABLE`` (its module imported only then: boto3 is not needed
    otherwise). ``create``: make the store (the DynamoDB table, the SQLite file) when missing;
    False refuses a missing one with a :class:`StateError` (a read-only open never creates)."""
    if settings.state.startswith(_DYNAMODB):
        # by name: the module (another backend, with boto3) is imported only when chosen
        dynamodb = importlib.import_module("dicomgate.state.dynamodb")
        table = settings.state[len(_DYNAMODB) :]
        return cast(StateStore, dynamodb.open_dynamodb(table, readonly=readonly, create=create))
    if settings.state != "sqlite":
        raise StateError(f"unknown state store {settings.state!r} (DICOMGATE_STATE)")
    from dicomgate.state.sqlite import SqliteStateStore

    if not create and not readonly and not settings.state_path.exists():
        raise StateError(
            f"no state store at {settings.state_path}, and creating one is forbidden "
            "(DICOMGATE_STATE_CREATE=false): run `dicomgate state init` first"
        )
    return SqliteStateStore.open(settings.state_path, readonly=readonly)
