"""Study completion (DESIGN 4): when is a study ready for its next manifest?

A study is complete when no instance of it arrived for ``stable_after`` seconds, no open
association has sent it anything, every instance is uploaded or quarantined, and at least one
of them is not yet listed in a manifest.  An instance that arrives after delivery re-opens the
study; the next manifest (version N+1) lists everything.
"""

from __future__ import annotations

from collections.abc import Collection

from dicomgate.state import StudyProgress

__all__ = ["is_complete"]


def is_complete(
    study: StudyProgress, *, now: float, stable_after: float, in_flight: Collection[str]
) -> bool:
    return (
        study.pending == 0
        and study.unreported > 0
        and now - study.last_received_at >= stable_after
        and study.study_instance_uid not in in_flight
    )
