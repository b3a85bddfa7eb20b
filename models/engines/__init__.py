"""Tortoise's SQLite and asyncpg clients with transactions that survive cancellation.

Tortoise (1.1) takes the SQLite connection's lock, or a PostgreSQL pool connection, in a
transaction's ``__aenter__`` and gives it back only in ``__aexit__``. A task cancelled while
``BEGIN`` is awaited (a client gone mid-request, a worker stopping, a ``wait_for`` timing
out) leaves ``__aenter__`` by the exception, so ``__aexit__`` never runs: on SQLite every
later query waits for the lock forever, on PostgreSQL the pool loses a connection for good.
These clients give the lock or the connection back when entering fails. The engine is
chosen in ``models.config.tortoise_config``; everything else is Tortoise's own. (The
modules are named for the driver: Tortoise's migration executor picks its schema editor
from the client's module name.)
"""
