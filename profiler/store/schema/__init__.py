"""The files a run, a sweep and a plan leave, as typed models: ``Summary`` (summary.json),
``Manifest`` (manifest.json), ``SweepIndex`` (a sweep's index.json) and ``Plan`` (the plan JSON
of ``infprof plan --json`` / ``plan.json`` beside runs). Each has ``load(path)`` and
``save(path)`` (atomic); every reader and writer of these files goes through them.

Older files: ``schema_version`` drives the migration of what older versions wrote, in
``migrations`` and nowhere else. A file without ``schema_version`` is version 1; a saved file
always carries its model's.

Unknown keys (a newer file read by older code, or a section no reader walks into) are kept as
they are: every model allows extra keys and ``save`` writes them back unchanged, so a reader
never breaks on a key it does not know and a round trip loses nothing. ``save`` writes only
the keys the document has (``exclude_unset``), in the order the file had them (new keys
after), so a loaded file saves byte for byte as it was. What is refused: a known key of the
wrong type, and a manifest's ``ended`` outside ``Ended``; the error names the file and field.
"""

from profiler.store.schema.base import Artifact as Artifact
from profiler.store.schema.base import Part as Part
from profiler.store.schema.manifest_file import *  # noqa: F403  (its __all__)
from profiler.store.schema.migrations import MIGRATIONS as MIGRATIONS
from profiler.store.schema.migrations import key_numbers_of as key_numbers_of
from profiler.store.schema.migrations import migrate as migrate
from profiler.store.schema.summary_file import *  # noqa: F403  (its __all__)
from profiler.store.schema.sweep_files import *  # noqa: F403  (its __all__)
