"""API keys for machine clients of the current organization."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from kit.roles import Role
from models.apikeys import ApiKey as ApiKeyRow
from resolvers import apikeys, members
from schema.accounts import User
from schema.permissions import mutation, query
from schema.relay import After, Connection, First, ModelNode, decode_id


@strawberry.type(
    description="A key a machine client sends as `Authorization: Bearer sbk_…`; it acts in "
    "this organization with its role. The secret is shown once, at creation, and never again."
)
class ApiKey(ModelNode):
    _model: ClassVar[type] = ApiKeyRow
    _permission: ClassVar[str] = "apikeys:manage"
    id: relay.NodeID[int]
    name: str = strawberry.field(description="What the key is for.")
    role: Role = strawberry.field(
        description="The role the key acts with, never more than its creator's current role: "
        "when the creator is demoted, the key is capped at the new role (it keeps only the "
        "permissions both hold); when the creator is removed or deactivated, the key is "
        "revoked and refused at once."
    )
    prefix: str = strawberry.field(
        description="The key's first 12 characters, to recognise it; not enough to use it."
    )
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    last_used_at: dt.datetime | None = strawberry.field(
        description="Last time it authenticated a request (to the minute); null if never."
    )
    revoked_at: dt.datetime | None = strawberry.field(
        description="When it was revoked; a revoked key is refused at once."
    )
    _created_by_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
            _created_by_id=row.created_by_id,
        )

    @strawberry.field(description="Who created it; null if that account is gone.")
    async def created_by(self, info: Info) -> User | None:
        if self._created_by_id is None:
            return None
        row = await members.load_member_user(info.context, self._created_by_id)
        return None if row is None else User.from_row(row)


@strawberry.input(description="A new API key.")
class CreateApiKeyInput:
    name: str = strawberry.field(description="What the key is for (1 to 120 characters).")
    role: Role = strawberry.field(
        description="The role the key acts with: one holding no permission your role lacks "
        "(your own, or READ_ONLY, SUPPORT… below it; a MANAGER cannot make an ACCOUNTING key, "
        "which reads AI usage). It never holds more than your current role: demoting you "
        "caps it, removing you revokes it."
    )


@strawberry.type(description="The new key and its secret.")
class CreateApiKeyPayload:
    api_key: ApiKey = strawberry.field(description="The key.")
    secret: str = strawberry.field(
        description="The full key, shown this once: store it now; only its hash is kept."
    )


@strawberry.input(description="The key to revoke.")
class RevokeApiKeyInput:
    id: relay.GlobalID = strawberry.field(description="Id of the API key.")


@strawberry.type(description="The revoked key.")
class RevokeApiKeyPayload:
    api_key: ApiKey = strawberry.field(description="The key, now revoked.")


@strawberry.type
class Query:
    @query(operation=apikeys.list_api_keys, description="API keys of the current organization.")
    async def api_keys(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        include_revoked: Annotated[
            bool, strawberry.argument(description="Also list revoked keys.")
        ] = True,
    ) -> Connection[ApiKey]:
        page = await apikeys.list_api_keys(
            info.context, first=first, after=after, include_revoked=include_revoked
        )
        return Connection.of(page, ApiKey.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=apikeys.create_api_key,
        description="Create an API key with a role within yours (see `role`); the secret is in "
        "the answer once.",
    )
    async def create_api_key(self, info: Info, input: CreateApiKeyInput) -> CreateApiKeyPayload:
        created = await apikeys.create_api_key(info.context, name=input.name, role=input.role.value)
        return CreateApiKeyPayload(api_key=ApiKey.from_row(created.key), secret=created.secret)

    @mutation(
        operation=apikeys.revoke_api_key,
        description="Revoke an API key; it is refused at once.",
    )
    async def revoke_api_key(self, info: Info, input: RevokeApiKeyInput) -> RevokeApiKeyPayload:
        row = await apikeys.revoke_api_key(info.context, key_id=decode_id(input.id, "ApiKey"))
        return RevokeApiKeyPayload(api_key=ApiKey.from_row(row))
