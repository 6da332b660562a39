"""Imports: contacts and events from files, streamed in batches, bad rows set aside."""

from segments.imports.batches import ImportSummary, RejectList, RejectSink
from segments.imports.contacts import import_contacts
from segments.imports.events import import_events
from segments.imports.reading import FileProblem, RejectsFile

__all__ = [
    "FileProblem",
    "ImportSummary",
    "RejectList",
    "RejectSink",
    "RejectsFile",
    "import_contacts",
    "import_events",
]
