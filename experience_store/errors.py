"""Errors a user of the experience store can cause and fix (a bad pack, an unknown embedding
spec, a lost write race). The toolkit's CLI prints them as one line and exits 2; this package
has its own type because it must not import ``tfgrpo``."""


class StoreError(Exception):
    """A problem the user can fix; the message says what to fix."""


class PackError(StoreError):
    """A pack that is refused: malformed, unsafe, or not verifiable. Nothing was written."""


class ConflictError(StoreError):
    """Another writer committed to the same library first; this writer's ops were not applied."""
