"""The audience and the database foundation.

Owns ``Base`` and the engine and session factories, the audience (contacts,
identities, events from every channel, interests, consent, suppressions), the
segment rule language and its compiler to SQL, and imports.

May import nothing of Patron's: every other package builds on this one.
"""
