"""The audience and the database foundation.

Owns ``Base`` and the engine and session factories, the audience (contacts,
identities, events from every channel, interests, consent, suppressions), the
segment rule language and its compiler to SQL, imports, what a contact tells
us on the preference page (``preferences``: language, interests, frequency cap,
consent per purpose), and the audience's part of a person's export and erasure
(``privacy``: erased addresses are kept only as digests).

May import nothing of Patron's: every other package builds on this one.
"""
