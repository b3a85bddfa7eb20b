"""Assemble the one schema from every area's Query, Mutation and Subscription."""

from __future__ import annotations

import copy
import functools
from types import ModuleType
from typing import Annotated, Any

import strawberry
from graphql.validation import MaxIntrospectionDepthRule
from strawberry import relay
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info

from kit.settings import Environment, Settings
from schema import (
    accounts,
    ai,
    apikeys,
    billing,
    calendar,
    contacts,
    credentials,
    events,
    files,
    identity,
    inbox,
    integrations,
    invoices,
    jobs,
    knowledge,
    leads,
    mail,
    mailbox,
    meetings,
    members,
    messaging,
    notion,
    payments,
    system,
    tasks,
    webhooks_in,
    webhooks_out,
)
from schema.execution import GatewayExecutionContext
from schema.extension_runner import LeanExtensionsRunner
from schema.extensions import Limits, gateway_extension
from schema.limits import StorableStrings, limits_rule
from schema.relay import resolve_global_id

# Every area module that contributes root fields. Add a new area here.
AREAS: list[ModuleType] = [
    accounts,
    identity,
    members,
    apikeys,
    credentials,
    system,
    webhooks_in,
    webhooks_out,
    jobs,
    mail,
    mailbox,
    invoices,
    payments,
    billing,
    events,
    integrations,
    ai,
    contacts,
    leads,
    tasks,
    files,
    messaging,
    inbox,
    calendar,
    meetings,
    notion,
    knowledge,
]


class GatewaySchema(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: Any, extensions: list[Any]
    ) -> LeanExtensionsRunner:
        return LeanExtensionsRunner(execution_context=execution_context, extensions=extensions)

    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        """Strawberry logs every error with a traceback; expected errors are answers, not
        incidents. Unexpected ones are logged once, with the request id, by GatewayErrors."""


@strawberry.type
class NodeQuery:
    @strawberry.field(
        description="Fetch any object by its global id. Requires authentication; "
        "an id from another organization is not found."
    )
    async def node(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="The ID of the object.")],
    ) -> relay.Node | None:
        return await resolve_global_id(info, id)


ROOT_DESCRIPTIONS = {
    "Query": "Everything a caller can read.",
    "Mutation": "Everything a caller can change; each mutation takes one `input`.",
    "Subscription": "Live streams over graphql-transport-ws.",
}


def _root(name: str, kind: str, extra: tuple[type, ...] = ()) -> type | None:
    parts = tuple(getattr(m, kind) for m in AREAS if hasattr(m, kind)) + extra
    if not parts:
        return None
    return strawberry.type(type(name, parts, {}), description=ROOT_DESCRIPTIONS[name])


def build_schema(settings: Settings) -> GatewaySchema:
    return _build(
        Limits(
            depth=settings.max_query_depth,
            tokens=settings.max_query_tokens,
            aliases=settings.max_aliases,
            fragments=settings.max_query_fragments,
            cost=settings.max_query_cost,
            page=settings.max_page_size,
            introspection=settings.introspection_policy,
            suggestions_for_anonymous=settings.switchboard_env is not Environment.PRODUCTION,
        )
    )


@functools.cache
def _types() -> GatewaySchema:
    """The type system, built once per process: strawberry converts field objects in place,
    so a second Schema over the same root types fails."""
    query = _root("Query", "Query", (NodeQuery,))
    mutation = _root("Mutation", "Mutation")
    subscription = _root("Subscription", "Subscription")
    return GatewaySchema(
        query=query,  # type: ignore[arg-type]
        mutation=mutation,
        subscription=subscription,
        config=StrawberryConfig(auto_camel_case=True),
        execution_context_class=GatewayExecutionContext,
    )


@functools.cache
def _build(limits: Limits) -> GatewaySchema:
    """One schema per set of limits, sharing the type system; only the extensions differ."""
    schema = copy.copy(_types())
    # The rules are built once per set of limits (the validation cache keys on them).
    # The depth and alias limits skip `__` fields, so introspection would nest without end
    # (`__schema { types { fields { type { fields …`): graphql-core's recommended
    # MaxIntrospectionDepthRule covers that.
    rules = (
        limits_rule(limits.depth, limits.aliases, limits.fragments),
        MaxIntrospectionDepthRule,
        StorableStrings,
    )
    # One extension for metrics, redaction, the rules, the token limit, the parse and
    # validation caches, the cost limit and error codes: strawberry's per-hook cost is per
    # extension.
    schema.extensions = (gateway_extension(rules, limits),)
    return schema


def export_sdl(settings: Settings) -> str:
    return build_schema(settings).as_str() + "\n"
