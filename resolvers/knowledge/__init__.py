"""The knowledge base the AI answers from: sources and their indexing (`sources`),
retrieval and grounded answers (`search`), text extraction and chunks (`extract`), the
URL fetch (`fetch`) and embeddings (`embeddings`)."""

from resolvers.knowledge.search import Answer, Hit, ask, search
from resolvers.knowledge.sources import (
    INDEX_JOB,
    add_source,
    get_source,
    list_sources,
    load_sources,
    refresh_source,
    remove_source,
    source_status,
)

__all__ = [
    "INDEX_JOB",
    "Answer",
    "Hit",
    "add_source",
    "ask",
    "get_source",
    "list_sources",
    "load_sources",
    "refresh_source",
    "remove_source",
    "search",
    "source_status",
]
