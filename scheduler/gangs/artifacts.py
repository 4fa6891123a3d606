"""Where a job's checkpoints and exports are, as the scheduler may know it: one small seam.

The scheduler asks "is this checkpoint (or export) still there?" before it resumes a job from
it or names it as another job's weights, and nothing else of these files. Addresses are URIs:
a plain path (a folder on the ranks' disks), or an fsspec URI a user gave (``s3://...``),
checked through fsspec where the protocol's package is installed. A plain path is checked only
where the pool's backend shares the scheduler's disk
(:attr:`~scheduler.domain.capabilities.BackendCapabilities.shared_filesystem`); elsewhere the
answer is "cannot tell from here" (None) and the scheduler trusts what the ranks recorded (a
checkpoint event is sent only after the checkpoint is complete): the ranks check again when they
load it.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.domain.capabilities import capabilities_of


class ArtifactStore:
    """Answers whether an artifact is present, for gangs of one kind of backend."""

    def __init__(self, shares_disk: bool) -> None:
        self.shares_disk = shares_disk
        """Whether a plain path names a folder on the scheduler's own disk."""

    @classmethod
    def for_backend(cls, backend: str) -> ArtifactStore:
        return cls(capabilities_of(backend).shared_filesystem)

    def present(self, uri: str) -> bool | None:
        """True or False when it can be checked from here; None when it cannot (a path on
        another machine's disk, a protocol whose fsspec package is not installed)."""
        scheme, _, rest = uri.partition("://")
        if not rest:  # a plain path
            return Path(uri).is_dir() if self.shares_disk else None
        if scheme == "file":
            return Path(rest).is_dir() if self.shares_disk else None
        try:
            import fsspec

            filesystem, path = fsspec.core.url_to_fs(uri)
            return bool(filesystem.exists(path))
        except (ImportError, ValueError, OSError):
            return None

    def usable(self, uri: str) -> bool:
        """Whether to rely on ``uri``: present, or not checkable from here."""
        return self.present(uri) is not False
