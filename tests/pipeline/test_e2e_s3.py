"""End to end with real parts: DCMTK storescu → dicomgate serve → SeaweedFS (S3) → links.

The partner's view: a signed webhook arrives, the manifest, the index and every instance
download through plain HTTP from the presigned links, sizes and SHA-256 match the manifest,
and nothing identifying survived (checked by the PHI verifier against the originals).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomgate.deid import compile_profile, verify_no_phi
from dicomgate.testing import CT_PHI, write_ct_study
from tests.helpers import dicomgate_cli, serve_process, storescu, wait_for
from tests.pipeline.webhook import SECRET, Webhook, webhook_server
from tests.seaweed import SeaweedFS


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return bytes(r.read())


def _status_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def node_env(seaweed: SeaweedFS, bucket: str, hook: Webhook, **extra: str) -> dict[str, str]:
    return {
        **seaweed.env(),
        "DICOMGATE_DESTINATION": f"s3://{bucket}/deliveries",
        "DICOMGATE_STABLE_AFTER": "1",
        "DICOMGATE_NOTIFY_WEBHOOK_URL": hook.url,
        "DICOMGATE_NOTIFY_WEBHOOK_SECRET": SECRET,
        **extra,
    }


@pytest.mark.slow
def test_ct_study_delivered_through_presigned_links(
    tmp_path: Path, dcmtk: dict[str, str], seaweed: SeaweedFS, bucket: str
) -> None:
    """300 CT instances full of PHI arrive de-identified, whole, downloadable, once."""
    paths = write_ct_study(tmp_path / "study", 300)
    data_dir = tmp_path / "data"
    with (
        webhook_server() as hook,
        serve_process(data_dir, env=node_env(seaweed, bucket, hook)) as node,
    ):
        storescu(dcmtk, node.port, tmp_path / "study")
        assert wait_for(lambda: hook.versions() == [1], timeout=180), node.log_text()[-3000:]
        note = hook.latest()
        time.sleep(1.5)  # nothing else may arrive: one notification per manifest version
        assert hook.versions() == [1] and hook.bad_signatures == 0

        # what the notification promises
        assert note["counts"]["instances"] == 300 and note["counts"]["quarantined"] == 0
        links = note["links"]
        manifest = json.loads(_get(links["manifest"]["url"]))
        assert manifest["manifest_version"] == 1
        assert manifest["study_instance_uid"] == note["study_instance_uid"]
        assert len(manifest["instances"]) == 300
        index = list(csv.DictReader(io.StringIO(_get(links["index"]["url"]).decode())))
        assert len(index) == 300

        # every instance through its link: bytes match the manifest, no PHI survives
        by_key = {i["key"]: i for i in manifest["instances"]}
        by_number = {int(dcmread(p, stop_before_pixels=True).InstanceNumber): p for p in paths}
        profile = compile_profile([])
        planted = [v for v in CT_PHI.values() if len(v) >= 4]
        delivered_uids = set()
        for link in links["instances"]:
            data = _get(link["url"])
            entry = by_key[link["key"]]
            assert len(data) == entry["size"] == link["size"]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] == link["sha256"]
            raw = data.decode("latin-1")
            assert not [v for v in planted if v in raw]
            delivered = dcmread(io.BytesIO(data))
            original = dcmread(by_number[int(delivered.InstanceNumber)])
            assert str(original.SOPInstanceUID) not in raw
            assert verify_no_phi(original, delivered, profile) == []
            delivered_uids.add(str(delivered.SOPInstanceUID))
        assert len(delivered_uids) == 300

        # a tampered link is refused; so is an expired one
        url = links["instances"][0]["url"]
        assert _status_code(url) == 200
        sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
        tampered = url[:sig_at] + ("0" if url[sig_at] != "0" else "1") + url[sig_at + 1 :]
        assert _status_code(tampered) == 403
        other_key = url.replace(links["instances"][0]["key"], links["instances"][1]["key"])
        assert _status_code(other_key) == 403

        env = node_env(seaweed, bucket, hook)
        study = note["study_instance_uid"]
        short = dicomgate_cli(
            "links", study, "--json", "--expires", "1", "--data-dir", str(data_dir), env=env
        )
        fresh = json.loads(short.stdout)
        time.sleep(2.5)
        assert _status_code(fresh["manifest"]["url"]) == 403

        # re-issued links (by the original Study UID too) work
        original_uid = str(dcmread(paths[0]).StudyInstanceUID)
        again = dicomgate_cli("links", original_uid, "--json", "--data-dir", str(data_dir), env=env)
        relinked = json.loads(again.stdout)
        assert relinked["manifest_version"] == 1 and len(relinked["instances"]) == 300
        assert _get(relinked["instances"][5]["url"]) == _get(links["instances"][5]["url"])

    # the bucket holds exactly the study: 300 instances, index, manifest-v1, manifest.json
    client = seaweed.client()
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    client.close()
    assert len(keys) == 303
