"""Prometheus metrics of one node, in its own registry (no module globals: STYLE 7)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """Everything an operator graphs. Gauges that are cheap to compute are read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.associations = Counter(
            "dicomgate_associations",
            "Association requests, by outcome (accepted, rejected).",
            ["outcome"],
            registry=r,
        )
        self.stores = Counter(
            "dicomgate_c_store",
            "C-STORE requests answered, by DIMSE status name.",
            ["status"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "dicomgate_c_store_seconds",
            "Time from a fully received dataset to its C-STORE status (checks, fsyncs, row).",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.stored_bytes = Counter(
            "dicomgate_stored_bytes", "Bytes of new instances made durable.", registry=r
        )
        self.pipeline = Counter(
            "dicomgate_pipeline_instances",
            "Instances through the pipeline, by outcome (processed, uploaded, quarantined).",
            ["outcome"],
            registry=r,
        )
        self.quarantined = Counter(
            "dicomgate_quarantined",
            "Instances held back, by rule (dicomgate.quarantine.Rule: burned-in, phi-check, "
            "invalid, spool, worker-crash, destination, other).",
            ["rule"],
            registry=r,
        )
        self.upload_retries = Counter(
            "dicomgate_upload_retries", "Upload attempts that failed and were retried.", registry=r
        )
        self.studies_delivered = Counter(
            "dicomgate_manifests_published", "Manifest versions published.", registry=r
        )
        self.notifications_failed = Counter(
            "dicomgate_notification_failures",
            "Notifier calls that failed, by notifier and whether the failure is retried.",
            ["notifier", "retryable"],
            registry=r,
        )
        self.commitments = Counter(
            "dicomgate_commitments",
            "Storage commitment requests answered, by result: committed (all), failed (some "
            "reported failed), unreported (the report could not be delivered).",
            ["result"],
            registry=r,
        )
        self.mpps = Counter(
            "dicomgate_mpps",
            "MPPS N-CREATE / N-SET handled, by event: created, in_progress, completed, "
            "discontinued, refused.",
            ["event"],
            registry=r,
        )
        self.completions = Counter(
            "dicomgate_completions",
            "Manifests published, by how completeness was decided: commitment, mpps, idle.",
            ["how"],
            registry=r,
        )
        self.notifications_owed = Gauge(
            "dicomgate_notifications_owed",
            "Studies whose latest manifest has not been announced to every notifier yet.",
            registry=r,
        )
        self.open_associations = Gauge(
            "dicomgate_associations_open", "Associations open now.", registry=r
        )
        self.spool_bytes = Gauge("dicomgate_spool_bytes", "Bytes in the spool now.", registry=r)
        self.spool_limit = Gauge("dicomgate_spool_limit_bytes", "The spool limit.", registry=r)
        self.backlog = Gauge(
            "dicomgate_pipeline_backlog",
            "Instances received or processed but not yet uploaded or quarantined.",
            registry=r,
        )

        # several nodes share one state store (issue 8): which node this is, what it carries,
        # and how many nodes the store knows alive
        self.node_info = Gauge(
            "dicomgate_node_info",
            "This node's id in the state store (value 1).",
            ["node_id"],
            registry=r,
        )
        self.claimed = Gauge(
            "dicomgate_pipeline_claimed",
            "Instances this node has claimed (leased) and is carrying now.",
            registry=r,
        )
        self.nodes_alive = Gauge(
            "dicomgate_nodes_alive",
            "Nodes with a live heartbeat in the shared state store (this one included).",
            registry=r,
        )

    def watch(
        self,
        *,
        open_associations: Callable[[], float],
        spool_bytes: Callable[[], float],
        spool_limit: float,
        backlog: Callable[[], float],
        node_id: str = "",
        claimed: Callable[[], float] = lambda: 0,
        nodes_alive: Callable[[], float] = lambda: 1,
    ) -> None:
        """Bind the scrape-time gauges to the node's live objects."""
        self.open_associations.set_function(open_associations)
        self.spool_bytes.set_function(spool_bytes)
        self.spool_limit.set(spool_limit)
        self.backlog.set_function(backlog)
        self.node_info.labels(node_id=node_id).set(1)
        self.claimed.set_function(claimed)
        self.nodes_alive.set_function(nodes_alive)
