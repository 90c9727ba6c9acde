"""CloudWatch Embedded Metric Format (EMF) lines on stdout, beside the Prometheus endpoint.

With ``metrics_emf`` on, every ``metrics_emf_interval`` seconds (60 by default) and once more
when the node stops, the node writes its metrics as EMF JSON documents, one per line, to
stdout.  On ECS/Fargate (the ``awslogs`` driver) or under the CloudWatch agent, CloudWatch
Logs extracts them into metrics in the namespace ``dicomgate``; no scraper is needed.

A document is ``{"_aws": {"Timestamp": ms, "CloudWatchMetrics": [{"Namespace", "Dimensions":
[[...]], "Metrics": [{"Name", "Unit"}]}]}, <dimension>: value, <metric>: value}``.  EMF gives a
dimension one value per document, so a flush writes one line for the node's own metrics
(dimension ``NodeId``), one per C-STORE status (``NodeId``, ``Status``) and one per quarantine
rule (``NodeId``, ``Rule``), for every status and rule seen since the node started:

=========================  =======  ==============================================================
metric                     unit     value
=========================  =======  ==============================================================
AssociationsAccepted       Count    associations accepted since the last flush
AssociationsRejected       Count    associations rejected since the last flush
CStore                     Count    C-STORE responses by ``Status`` (``success``,
                                    ``out_of_resources``, ...: the Prometheus label values)
Quarantined                Count    instances held back, by ``Rule`` (:mod:`dicomgate.quarantine`)
UploadRetries              Count    upload attempts that failed and were retried
StudiesDelivered           Count    manifest versions published
NotificationFailures       Count    notifier calls that failed
Backlog                    Count    instances received or processed, not yet uploaded or
                                    quarantined (now; the whole state store's)
OldestUndeliveredAge       Seconds  age of the oldest instance received but not yet delivered
                                    or quarantined (now; 0 when there is none)
=========================  =======  ==============================================================

Counters are sent as deltas since the previous flush (CloudWatch aggregates EMF values as
samples: a sum over a period is then what happened in it), read from the node's Prometheus
registry so both views count the same events.  The two gauges are read from the state store at
flush time; a store that cannot answer leaves them out of that flush (and logs why).

Why not ``aws-embedded-metrics`` (PyPI): it was the first choice, and its 3.5.0 was read before
deciding.  Its configuration and resolved environment are process globals (environment variables
read once at import; the environment cached for the process), without ``AWS_EMF_ENVIRONMENT``
it probes the EC2 instance metadata endpoint over HTTP at the first flush, it adds default
dimensions (ServiceName, ServiceType, LogGroup) unless each logger is told not to, its flush is
a coroutine (with a sync wrapper that spins an event loop), and its local sink writes to
``sys.stdout`` with no stream to hand it.  A node needs none of that — a few documents a minute
from its own counters — so this module writes the format itself with :func:`json.dumps`: no
new dependency, no global state, a stream a test can hand in.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from prometheus_client import Counter

from dicomgate._logging import get_logger
from dicomgate._tracebacks import safe_traceback
from dicomgate.ops.metrics import Metrics
from dicomgate.state import StateStore

__all__ = ["NAMESPACE", "EmfEmitter"]

log = get_logger(__name__)

NAMESPACE = "dicomgate"


def _totals(counter: Counter) -> dict[tuple[str, ...], float]:
    """A counter's running totals by label values (``()`` for one without labels)."""
    out: dict[tuple[str, ...], float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[tuple(sample.labels.values())] = sample.value
    return out


def _document(
    timestamp_ms: int,
    dimensions: dict[str, str],
    values: Iterable[tuple[str, str, float]],
) -> dict[str, Any]:
    """One EMF document: ``values`` are (metric name, unit, value)."""
    values = list(values)
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit, _ in values],
                }
            ],
        },
        **dimensions,
        **{name: int(v) if float(v).is_integer() else v for name, _, v in values},
    }


class EmfEmitter:
    """Writes the node's metrics as EMF lines every ``interval`` seconds and at :meth:`stop`.

    ``stream`` is where lines go (default: ``sys.stdout`` as it is at each flush).
    """

    def __init__(
        self,
        metrics: Metrics,
        state: StateStore,
        *,
        node_id: str,
        interval: float = 60.0,
        stream: TextIO | None = None,
    ) -> None:
        self.metrics = metrics
        self.state = state
        self.node_id = node_id
        self.interval = interval
        self._stream = stream
        self._sent: dict[tuple[str, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="emf", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer and write a final flush (what happened since the last one)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.flush()

    # -- documents ------------------------------------------------------------------------------
    def _deltas(self, name: str, counter: Counter) -> dict[tuple[str, ...], float]:
        """Each label set's increase since the last flush (every label set ever seen)."""
        out = {}
        for labels, total in _totals(counter).items():
            key = (name, labels)
            out[labels] = total - self._sent.get(key, 0.0)
            self._sent[key] = total
        return out

    def _gauges(self, now: float) -> list[tuple[str, str, float]]:
        try:
            backlog = self.state.backlog()
            oldest = self.state.oldest_undelivered()
        except Exception as exc:  # the store is down for a moment: counters still go out
            log.warning(
                "EMF gauges not read", error=type(exc).__name__, traceback=safe_traceback(exc)
            )
            return []
        age = max(0.0, now - oldest) if oldest is not None else 0.0
        return [("Backlog", "Count", float(backlog)), ("OldestUndeliveredAge", "Seconds", age)]

    def documents(self, now: float | None = None) -> list[dict[str, Any]]:
        """This flush's documents; the counters' baseline moves to now."""
        now = time.time() if now is None else now
        ms = int(now * 1000)
        m = self.metrics
        node = {"NodeId": self.node_id}
        associations = self._deltas("associations", m.associations)
        retries = self._deltas("retries", m.upload_retries)
        studies = self._deltas("studies", m.studies_delivered)
        failures = self._deltas("notifications", m.notifications_failed)
        values = [
            ("AssociationsAccepted", "Count", associations.get(("accepted",), 0.0)),
            ("AssociationsRejected", "Count", associations.get(("rejected",), 0.0)),
            ("UploadRetries", "Count", retries.get((), 0.0)),
            ("StudiesDelivered", "Count", studies.get((), 0.0)),
            ("NotificationFailures", "Count", sum(failures.values())),
            *self._gauges(now),
        ]
        docs = [_document(ms, node, values)]
        for (status,), n in sorted(self._deltas("stores", m.stores).items()):
            docs.append(_document(ms, node | {"Status": status}, [("CStore", "Count", n)]))
        for (rule,), n in sorted(self._deltas("quarantined", m.quarantined).items()):
            docs.append(_document(ms, node | {"Rule": rule}, [("Quarantined", "Count", n)]))
        return docs

    def flush(self) -> None:
        """Write this flush's documents, one JSON line each; never raises."""
        with self._lock:
            try:
                stream = self._stream or sys.stdout
                for doc in self.documents():
                    # a line at a time, each flushed: one write(2) of well under PIPE_BUF, so
                    # the lines of several workers sharing stdout never interleave
                    stream.write(json.dumps(doc, separators=(",", ":")) + "\n")
                    stream.flush()
            except Exception as exc:
                log.error(
                    "EMF flush failed", error=type(exc).__name__, traceback=safe_traceback(exc)
                )
