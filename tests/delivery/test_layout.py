"""Object layout: keys from pseudonymized UIDs only, nothing that could escape a prefix."""

from __future__ import annotations

import pytest

from dicomgate.delivery import (
    index_key,
    instance_key,
    latest_manifest_key,
    manifest_key,
    study_prefix,
)

STUDY, SERIES, SOP = "2.25.1", "2.25.2", "2.25.3"


def test_keys_follow_the_documented_layout() -> None:
    """Instance, manifest, index and latest-manifest keys are as documented."""
    assert instance_key(STUDY, SERIES, SOP) == "2.25.1/2.25.2/2.25.3.dcm"
    assert manifest_key(STUDY, 2) == "2.25.1/manifest-v2.json"
    assert index_key(STUDY, 2) == "2.25.1/index-v2.csv"
    assert latest_manifest_key(STUDY) == "2.25.1/manifest.json"
    assert study_prefix(STUDY) == "2.25.1/"


@pytest.mark.parametrize(
    "uid", ["", "../2.25", "2.25/1", "2.25.01", "1.2.", "DOE^JANE", "1" * 65, "2.25.1 "]
)
def test_non_uids_are_refused(uid: str) -> None:
    """Anything that is not a well-formed UID (PS3.5 9.1) cannot become part of a key."""
    with pytest.raises(ValueError, match="not a valid DICOM UID"):
        instance_key(STUDY, SERIES, uid)


def test_manifest_versions_start_at_one() -> None:
    """Version 0 (or negative) is a bug, not a key."""
    with pytest.raises(ValueError, match="version"):
        manifest_key(STUDY, 0)
