"""CloudWatch Embedded Metric Format from the node: read back as CloudWatch Logs would.

:func:`_extract` applies the EMF specification's rules to a log line (a JSON object with an
``_aws`` member whose ``CloudWatchMetrics`` directives name a namespace, dimension sets and
metrics, each dimension and metric a top-level member) and returns the metric data it yields;
a line it cannot use fails the test rather than being skipped, as CloudWatch would drop it.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomgate.ops.emf import NAMESPACE, EmfEmitter
from dicomgate.testing import write_ct_study
from tests.helpers import associate, send_files, start_node, wait_for

#: the units CloudWatch accepts (MetricDatum.Unit)
_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
}  # fmt: skip

Datum = tuple[str, frozenset[tuple[str, str]], float, str]  # name, dimensions, value, unit


def _extract(line: str) -> list[Datum]:
    """The metric data CloudWatch extracts from one EMF line (asserting the format)."""
    doc = json.loads(line)
    assert isinstance(doc, dict)
    aws = doc["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 10**12  # ms, not s
    directives = aws["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    data: list[Datum] = []
    for directive in directives:
        assert directive["Namespace"] == NAMESPACE
        dimension_sets = directive["Dimensions"]
        assert isinstance(dimension_sets, list) and dimension_sets
        metrics = directive["Metrics"]
        assert isinstance(metrics, list) and 0 < len(metrics) <= 100
        for keys in dimension_sets:
            assert isinstance(keys, list) and 0 < len(keys) <= 30
            assert all(isinstance(doc[k], str) and doc[k] for k in keys)  # top-level, strings
            dims = frozenset((k, doc[k]) for k in keys)
            for metric in metrics:
                assert set(metric) <= {"Name", "Unit", "StorageResolution"}
                assert metric["Unit"] in _UNITS
                value = doc[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
                data += [(metric["Name"], dims, float(v), metric["Unit"]) for v in values]
    return data


def _emf_lines(text: str) -> list[str]:
    """The EMF lines among what was written (CloudWatch ignores other log lines)."""
    return [line for line in text.splitlines() if line.startswith('{"_aws"')]


def test_node_writes_emf_cloudwatch_can_extract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node with metrics_emf on and a short interval: what its stdout lines add up to is
    what happened — a study of three sent (one held back for burned-in text), an association
    rejected, one manifest — each metric with its NodeId and, for C-STORE and quarantines, its
    Status or Rule; the gauges' last values say nothing is left."""
    paths = write_ct_study(tmp_path / "s", 3, rows=16, columns=16)
    burned = dcmread(paths[1])
    burned.BurnedInAnnotation = "YES"
    burned.save_as(paths[1], enforce_file_format=True)
    uid = str(burned.StudyInstanceUID)
    with start_node(
        tmp_path / "data",
        pipeline=True,
        stable_after=0.2,
        burned_in_policy="quarantine",
        metrics_emf=True,
        metrics_emf_interval=0.2,
    ) as n:
        node_id = n.node.settings.node_id
        assert send_files(n.host, n.port, paths) == [0, 0, 0]
        assert associate(n.host, n.port, aec="SOMEONE_ELSE").is_rejected
        assert wait_for(lambda: (s := n.node.state.study(uid)) is not None and s.manifest_version)  # type: ignore[union-attr]
    # stopped: the final flush is written
    lines = _emf_lines(capsys.readouterr().out)
    assert lines
    data = [d for line in lines for d in _extract(line)]

    totals: dict[tuple[str, frozenset[tuple[str, str]]], float] = defaultdict(float)
    last: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    units: dict[str, set[str]] = defaultdict(set)
    for name, dims, value, unit in data:
        totals[(name, dims)] += value
        last[(name, dims)] = value
        units[name].add(unit)
    node = frozenset({("NodeId", node_id)})

    def dims(**more: str) -> frozenset[tuple[str, str]]:
        return node | frozenset(more.items())

    assert totals[("CStore", dims(Status="success"))] == 3
    assert totals[("Quarantined", dims(Rule="burned-in"))] == 1
    assert totals[("AssociationsAccepted", node)] == 1
    assert totals[("AssociationsRejected", node)] == 1
    assert totals[("StudiesDelivered", node)] == 1
    assert totals[("UploadRetries", node)] == 0
    assert totals[("NotificationFailures", node)] == 0
    assert last[("Backlog", node)] == 0
    assert last[("OldestUndeliveredAge", node)] == 0
    # nothing else: no other status or rule, every metric under this node
    assert {k for k in totals if k[0] in ("CStore", "Quarantined")} == {
        ("CStore", dims(Status="success")),
        ("Quarantined", dims(Rule="burned-in")),
    }
    assert all(("NodeId", node_id) in d for _, d in totals)
    assert units["OldestUndeliveredAge"] == {"Seconds"}
    assert all(units[name] == {"Count"} for name in units if name != "OldestUndeliveredAge")


def test_deltas_and_the_oldest_undelivered_age(tmp_path: Path) -> None:
    """Counters go out as what happened since the last flush; the age is that of the oldest
    instance not delivered yet (an SCP-only node: received instances wait)."""
    paths = write_ct_study(tmp_path / "s", 2, rows=16, columns=16)
    with start_node(tmp_path / "data") as n:
        assert send_files(n.host, n.port, paths) == [0, 0]
        state = n.node.state
        assert state is not None
        stream = io.StringIO()
        emf = EmfEmitter(n.node.metrics, state, node_id="node-a", interval=3600, stream=stream)
        oldest = min(r.received_at for r in state.instances())

        first = emf.documents(now=oldest + 42.5)
        node_doc = first[0]
        assert node_doc["NodeId"] == "node-a"
        assert node_doc["Backlog"] == 2 and node_doc["OldestUndeliveredAge"] == 42.5
        assert node_doc["_aws"]["Timestamp"] == int((oldest + 42.5) * 1000)
        [store] = [d for d in first if "Status" in d]
        assert (store["Status"], store["CStore"]) == ("success", 2)

        assert send_files(n.host, n.port, paths[:1]) == [0]  # a duplicate: success again
        emf.flush()
    written = [_extract(line) for line in stream.getvalue().splitlines()]
    cstore = [v for data in written for name, _, v, _ in data if name == "CStore"]
    assert cstore == [1]  # one more since the first flush, not 3
    assert all(
        v == 1 for data in written for name, _, v, _ in data if name == "AssociationsAccepted"
    )


def test_the_extractor_refuses_what_cloudwatch_would_drop() -> None:
    """The reader above is strict: seconds for milliseconds, a dimension that is not a
    top-level member, an unknown unit."""
    good = {
        "_aws": {
            "Timestamp": 1_700_000_000_000,
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [["NodeId"]],
                 "Metrics": [{"Name": "Backlog", "Unit": "Count"}]}
            ],
        },
        "NodeId": "n",
        "Backlog": 3,
    }  # fmt: skip
    assert _extract(json.dumps(good)) == [("Backlog", frozenset({("NodeId", "n")}), 3.0, "Count")]
    seconds = json.loads(json.dumps(good))
    seconds["_aws"]["Timestamp"] = 1_700_000_000
    no_dimension = {k: v for k, v in good.items() if k != "NodeId"}
    bad_unit = json.loads(json.dumps(good))
    bad_unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = "Instances"
    for doc in (seconds, no_dimension, bad_unit):
        with pytest.raises((AssertionError, KeyError)):
            _extract(json.dumps(doc))
