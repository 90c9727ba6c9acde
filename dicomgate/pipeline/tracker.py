"""Study completion (DESIGN 4): when is a study ready for its next manifest?

A study is ready when every instance is uploaded or quarantined, at least one of them is not
yet listed in a manifest, no open association has sent it anything — and one of the rules of
:func:`dicomgate.state.completion_rule` holds: what the sender said (a storage commitment or a
COMPLETED MPPS) has all arrived (at once), its ``expected_deadline`` passed, or no instance
arrived for ``stable_after`` seconds (the rule for senders that say nothing, and the longest
wait). An instance that arrives after delivery re-opens the study; the next manifest (version
N+1) lists everything. The store decides again, atomically, in ``begin_publication``.
"""

from __future__ import annotations

from collections.abc import Collection

from dicomgate.state import StudyProgress, completion_rule

__all__ = ["is_complete"]


def is_complete(
    study: StudyProgress,
    *,
    now: float,
    stable_after: float,
    in_flight: Collection[str],
    expected_deadline: float | None = None,
) -> bool:
    return (
        study.pending == 0
        and study.unreported > 0
        and study.study_instance_uid not in in_flight
        and completion_rule(
            study, now=now, stable_after=stable_after, expected_deadline=expected_deadline
        )
        is not None
    )
