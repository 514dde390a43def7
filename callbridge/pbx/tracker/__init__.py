"""The call tracker: a pure state machine turning AMI events into business-call events.

``CallTracker(pbx_config).feed(msg)`` → :data:`callbridge.calls.CallEvent` values;
``resync(snapshot_items, at)`` after an AMI gap. See :mod:`.tracker` for the rules.

Layout: :mod:`.tracker` is the facade dispatching events by name; all state lives in one
:class:`~.book.Book`. Each job has its module: :mod:`.channel_events` (a channel's own
life), :mod:`.dialing` (who rang, who answered, pickups), :mod:`.transfers`,
:mod:`.originate`, :mod:`.linking` (Linkedid groups and merges), :mod:`.parties` (Local
pairs), :mod:`.decisions` (direction, ringing, result, end) and :mod:`.resync` (with
:mod:`.recovery`, what a snapshot item says about a leg adopted without its DialBegin);
:mod:`.channels` and :mod:`.state` are the channel and call records.
"""

from .snapshot import snapshot_at
from .state import TRANSITIONS, CallState, Trigger
from .tracker import TRACKED_VARIABLES, CallTracker

__all__ = ["TRACKED_VARIABLES", "TRANSITIONS", "CallState", "CallTracker", "Trigger", "snapshot_at"]
