"""The layer under App: one connected engine and the policy every engine shares (group commit,
queues created on first use, settle policy, the sync portal)."""

from conveyor.core.core import Core

__all__ = ["Core"]
