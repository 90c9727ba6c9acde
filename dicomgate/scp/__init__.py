"""The DICOM side of the node: a pynetdicom SCP (C-ECHO, C-STORE) and a C-ECHO client."""

from __future__ import annotations

from dicomgate.scp._echo import echo
from dicomgate.scp._policy import AccessPolicy
from dicomgate.scp._server import TRANSFER_SYNTAXES, AssociationInfo, StoreSCP
from dicomgate.status import Status

__all__ = ["TRANSFER_SYNTAXES", "AccessPolicy", "AssociationInfo", "Status", "StoreSCP", "echo"]
