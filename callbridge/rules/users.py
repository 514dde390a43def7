"""Extensions → Bitrix24 users, as the portal would accept them.

The portal refuses ``USER_ID`` of an inactive user and an extension no active user carries
(reference §4.3, §7.9). Such requests are never queued: the rules fall back to the default
user instead, and :func:`unmapped_extensions` lists the extensions that will, so the app
can warn once at start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from callbridge.crm.base import CrmUser

__all__ = ["UserDirectory", "unmapped_extensions"]


@dataclass(frozen=True, slots=True)
class UserDirectory:
    by_extension: Mapping[str, int] = field(default_factory=dict)
    active_ids: frozenset[int] = frozenset()

    @classmethod
    def from_users(cls, users: Iterable[CrmUser]) -> UserDirectory:
        by_ext: dict[str, int] = {}
        active: set[int] = set()
        for user in users:
            if not user.active:
                continue
            active.add(user.id)
            if user.extension:
                # Two users with one extension: the portal's phone index keeps one; so do
                # we (the lower id, deterministic).
                current = by_ext.get(user.extension)
                by_ext[user.extension] = user.id if current is None else min(current, user.id)
        return cls(by_ext, frozenset(active))

    def user_of(self, extension: str | None) -> int | None:
        """The active user carrying ``extension``, else ``None``."""
        return None if extension is None else self.by_extension.get(extension)

    def is_active(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.active_ids


def unmapped_extensions(extensions: Iterable[str], directory: UserDirectory) -> list[str]:
    """Extensions no active Bitrix24 user carries (sorted; their calls go to the default user)."""
    return sorted({e for e in extensions if directory.user_of(e) is None})
