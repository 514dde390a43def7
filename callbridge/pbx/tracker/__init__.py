"""The call tracker: a pure state machine turning AMI events into business-call events.

``CallTracker(pbx_config).feed(msg)`` → :data:`callbridge.calls.CallEvent` values;
``resync(snapshot_items, at)`` after an AMI gap. See :mod:`.tracker` for the rules.
"""

from .snapshot import snapshot_at
from .state import TRANSITIONS, CallState, Trigger
from .tracker import TRACKED_VARIABLES, CallTracker

__all__ = ["TRACKED_VARIABLES", "TRANSITIONS", "CallState", "CallTracker", "Trigger", "snapshot_at"]
