"""CRM contacts, and the GraphQL pieces the CRM areas share (ordering, upsert results)."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, cast

import strawberry
from strawberry import relay
from strawberry.types import Info
from strawberry.types.nodes import SelectedField

from kit.errors import GatewayError
from models import contacts as models
from resolvers import contacts as crm_contacts
from resolvers import crm
from resolvers import tasks as crm_tasks
from resolvers.crm import UpsertResult
from schema.accounts import User
from schema.permissions import mutation, query
from schema.relay import Connection, ModelNode, OrderDirection, decode_id, encode_id

if TYPE_CHECKING:
    from schema.tasks import Task

TaskRef = Annotated["Task", strawberry.lazy("schema.tasks")]


# Shared ------------------------------------------------------------------------------


@strawberry.enum(description="What happened to one item of a batch upsert.")
class UpsertOutcome(Enum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    UNCHANGED = "UNCHANGED"
    FAILED = "FAILED"


@strawberry.type(description="What is wrong with one field of an item.")
class UpsertFieldError:
    field: str = strawberry.field(description="The input field, camelCase.")
    message: str = strawberry.field(description="What is wrong with it.")


@strawberry.type(description="Why one item of a batch upsert failed.")
class UpsertItemError:
    code: str = strawberry.field(description="Error code, as in `errors[].extensions.code`.")
    message: str = strawberry.field(description="Human-readable explanation.")
    details: list[UpsertFieldError] = strawberry.field(description="Problems per input field.")

    @classmethod
    def of(cls, exc: GatewayError) -> UpsertItemError:
        details = dict(exc.extensions.get("details") or {})
        if not details and exc.extensions.get("field"):
            details[str(exc.extensions["field"])] = exc.message
        return cls(
            code=exc.code,
            message=exc.message,
            details=[UpsertFieldError(field=k, message=str(v)) for k, v in details.items()],
        )


def provided(input: Any, *, ids: dict[str, str] | None = None, skip: tuple[str, ...] = ()) -> dict:
    """The fields the caller gave (UNSET ones left out); id fields decoded to row ids."""
    ids = ids or {}
    out: dict[str, Any] = {}
    for f in type(input).__strawberry_definition__.fields:
        name = f.python_name
        value = getattr(input, name)
        if value is strawberry.UNSET or name in skip:
            continue
        if name in ids and value is not None:
            value = decode_id(value, ids[name])
        out[name] = value
    return out


def outcome_counts(results: list[UpsertResult]) -> dict[str, int]:
    counts = {o.value.lower(): 0 for o in UpsertOutcome}
    for r in results:
        counts[r.outcome.lower()] += 1
    return counts


def optional_id(gid: relay.GlobalID | None, type_name: str) -> int | None:
    return None if gid is None else decode_id(gid, type_name)


NOT_LOADED: Any = object()  # a relation the list read did not load


def selects(info: Info, *path: str) -> bool:
    """Whether the operation selects `path` (camelCase names) under this field, looking
    through fragments. Used to load a list's relations with its page."""
    level: list[Any] = list(info.selected_fields)
    for name in path:
        found: list[Any] = []
        while level:
            sel = level.pop()
            if not isinstance(sel, SelectedField):
                level.extend(sel.selections)  # a fragment: look inside
            elif sel.name == name:
                found.extend(sel.selections)
        if not found:
            return False
        level = found
    return True


FIRST = Annotated[
    int | None, strawberry.argument(description="Page size (default 20, at most MAX_PAGE_SIZE).")
]
AFTER = Annotated[
    str | None, strawberry.argument(description="Cursor of the last item of the previous page.")
]
UPSERT_LIMIT = f"at most {crm.MAX_UPSERT_ITEMS}"


# Contact ------------------------------------------------------------------------------


@strawberry.type(description="A person the organization does business with.")
class Contact(ModelNode):
    _model: ClassVar[type] = models.Contact
    _permission: ClassVar[str] = "crm:read"
    id: relay.NodeID[int]
    name: str = strawberry.field(description="Full name.")
    email: str = strawberry.field(description="Email address, lower-cased; empty when unknown.")
    phone: str = strawberry.field(description="Phone number as entered; empty when unknown.")
    company: str = strawberry.field(description="Company the contact works for.")
    notes: str = strawberry.field(description="Free-form notes.")
    external_id: str | None = strawberry.field(
        description="Id in the organization's external CRM; unique in the organization."
    )
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    updated_at: dt.datetime = strawberry.field(description="When it last changed.")
    _owner_id: strawberry.Private[int | None] = None
    # Loaded with the page when the query asks for them (see `contacts`); else NOT_LOADED.
    _owner: strawberry.Private[Any] = NOT_LOADED
    _open_tasks: strawberry.Private[Any] = NOT_LOADED

    @classmethod
    def from_row(cls, row: Any) -> Contact:
        return cls(
            id=row.id,
            name=row.name,
            email=row.email,
            phone=row.phone,
            company=row.company,
            notes=row.notes,
            external_id=row.external_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            _owner_id=row.owner_id,
        )

    @classmethod
    def from_values(cls, row: dict[str, Any], users: dict[int, User] | None = None) -> Contact:
        """From a plain row (`resolvers.contacts.CONTACT_COLUMNS`) of a list read, with its
        `owner` / `open_tasks` when the read loaded them (`users` shares User objects)."""
        owner: Any = NOT_LOADED
        if "owner" in row:
            owner = row["owner"]
            if owner is not None:
                users = {} if users is None else users
                owner = users.get(owner.id) or users.setdefault(owner.id, User.from_row(owner))
        open_tasks: Any = NOT_LOADED
        if "open_tasks" in row:
            from schema.tasks import Task

            open_tasks = [Task.from_values(t) for t in row["open_tasks"]]
        return cls(
            id=row["id"],
            name=row["name"],
            email=row["email"],
            phone=row["phone"],
            company=row["company"],
            notes=row["notes"],
            external_id=row["external_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            _owner_id=row["owner_id"],
            _owner=owner,
            _open_tasks=open_tasks,
        )

    # Plain (not async) resolvers: a list page that loaded the relation answers at once,
    # with no coroutine per contact; otherwise they return the DataLoader's awaitable.
    @strawberry.field(description="The member who owns this contact; null when unassigned.")
    def owner(self, info: Info) -> User | None:
        if self._owner is not NOT_LOADED:
            return cast("User | None", self._owner)
        return cast("User | None", self._load_owner(info))

    async def _load_owner(self, info: Info) -> User | None:
        row = await crm.load_user(info.context, self._owner_id)
        return None if row is None else User.from_row(row)

    @strawberry.field(description="Open tasks about this contact, soonest due first.")
    def open_tasks(self, info: Info) -> list[TaskRef]:
        if self._open_tasks is not NOT_LOADED:
            return cast("list[Task]", self._open_tasks)
        return cast("list[Task]", self._load_open_tasks(info))

    async def _load_open_tasks(self, info: Info) -> list[Task]:
        from schema.tasks import Task

        rows = await crm_tasks.open_tasks_of_contact(info.context, self.id)
        return [Task.from_values(t) for t in rows]


@strawberry.enum(description="Fields contacts can be ordered by.")
class ContactOrderField(Enum):
    NAME = "name"
    EMAIL = "email"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"


@strawberry.input(description="How to order contacts; ties are broken by id.")
class ContactOrder:
    field: ContactOrderField = strawberry.field(
        default=ContactOrderField.CREATED_AT, description="The field to order by."
    )
    direction: OrderDirection = strawberry.field(
        default=OrderDirection.ASC, description="Ascending or descending."
    )


@strawberry.input(description="Which contacts to list; all conditions must hold.")
class ContactFilter:
    search: str | None = strawberry.field(
        default=None, description="Text found in the name, email or company (case-insensitive)."
    )
    owner_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Only contacts owned by this member (a User id)."
    )


@strawberry.input(description="A new contact.")
class CreateContactInput:
    name: str = strawberry.field(description="Full name, 1 to 200 characters.")
    email: str | None = strawberry.field(default=strawberry.UNSET, description="Email address.")
    phone: str | None = strawberry.field(default=strawberry.UNSET, description="Phone number.")
    company: str | None = strawberry.field(
        default=strawberry.UNSET, description="Company, at most 200 characters."
    )
    notes: str | None = strawberry.field(
        default=strawberry.UNSET, description="Notes, at most 10,000 characters."
    )
    owner_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="Owning member (a User id of this organization)."
    )
    external_id: str | None = strawberry.field(
        default=strawberry.UNSET, description="Id in the external CRM; unique in the organization."
    )


@strawberry.input(description="Changes to a contact; omitted fields stay, null clears.")
class UpdateContactInput:
    id: relay.GlobalID = strawberry.field(description="The contact to change.")
    name: str | None = strawberry.field(default=strawberry.UNSET, description="Full name.")
    email: str | None = strawberry.field(default=strawberry.UNSET, description="Email address.")
    phone: str | None = strawberry.field(default=strawberry.UNSET, description="Phone number.")
    company: str | None = strawberry.field(default=strawberry.UNSET, description="Company.")
    notes: str | None = strawberry.field(default=strawberry.UNSET, description="Notes.")
    owner_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="Owning member; null unassigns."
    )
    external_id: str | None = strawberry.field(
        default=strawberry.UNSET, description="Id in the external CRM; null clears it."
    )


@strawberry.input(description="The contact to delete.")
class DeleteContactInput:
    id: relay.GlobalID = strawberry.field(description="The contact to delete.")


@strawberry.input(description="One contact of a sync batch, matched by `externalId`.")
class ContactUpsertItem:
    external_id: str = strawberry.field(description="Id in the external CRM: the match key.")
    name: str | None = strawberry.field(
        default=strawberry.UNSET, description="Full name; required when the contact is new."
    )
    email: str | None = strawberry.field(default=strawberry.UNSET, description="Email address.")
    phone: str | None = strawberry.field(default=strawberry.UNSET, description="Phone number.")
    company: str | None = strawberry.field(default=strawberry.UNSET, description="Company.")
    notes: str | None = strawberry.field(default=strawberry.UNSET, description="Notes.")
    owner_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="Owning member; null unassigns."
    )


@strawberry.input(description=f"A batch of contacts to create or update ({UPSERT_LIMIT}).")
class UpsertContactsInput:
    items: list[ContactUpsertItem] = strawberry.field(
        description=f"The contacts, {UPSERT_LIMIT}; omitted fields of existing ones stay."
    )


@strawberry.type(description="The new contact.")
class CreateContactPayload:
    contact: Contact = strawberry.field(description="The contact as stored.")


@strawberry.type(description="The changed contact.")
class UpdateContactPayload:
    contact: Contact = strawberry.field(description="The contact as stored.")


@strawberry.type(description="The deleted contact's id.")
class DeleteContactPayload:
    deleted_id: relay.GlobalID = strawberry.field(description="Id of the deleted contact.")


@strawberry.type(description="What happened to one item of `upsertContacts`.")
class ContactUpsertResult:
    index: int = strawberry.field(description="Position of the item in `input.items`.")
    external_id: str | None = strawberry.field(description="The item's external id.")
    outcome: UpsertOutcome = strawberry.field(description="Created, updated, unchanged or failed.")
    contact: Contact | None = strawberry.field(
        description="The contact as stored; null on failure."
    )
    error: UpsertItemError | None = strawberry.field(description="Why it failed; null otherwise.")


@strawberry.type(description="Per-item results of a contact sync batch.")
class UpsertContactsPayload:
    results: list[ContactUpsertResult] = strawberry.field(description="One result per item.")
    created: int = strawberry.field(description="How many contacts were created.")
    updated: int = strawberry.field(description="How many were changed.")
    unchanged: int = strawberry.field(description="How many already matched.")
    failed: int = strawberry.field(description="How many items failed.")

    @classmethod
    def of(cls, results: list[UpsertResult]) -> UpsertContactsPayload:
        return cls(
            results=[
                ContactUpsertResult(
                    index=r.index,
                    external_id=r.external_id,
                    outcome=UpsertOutcome(r.outcome),
                    contact=None if r.row is None or r.error else Contact.from_row(r.row),
                    error=None if r.error is None else UpsertItemError.of(r.error),
                )
                for r in results
            ],
            **outcome_counts(results),
        )


def contact_filter(f: ContactFilter | None) -> crm_contacts.ContactFilter | None:
    if f is None:
        return None
    return crm_contacts.ContactFilter(search=f.search, owner_id=optional_id(f.owner_id, "User"))


USER_IDS = {"owner_id": "User"}


@strawberry.type
class Query:
    @query(operation=crm_contacts.list_contacts, description="The organization's contacts.")
    async def contacts(
        self,
        info: Info,
        first: FIRST = None,
        after: AFTER = None,
        filter: Annotated[
            ContactFilter | None, strawberry.argument(description="Conditions to match.")
        ] = None,
        order_by: Annotated[
            ContactOrder | None,
            strawberry.argument(description="Sort order (default: oldest first)."),
        ] = None,
    ) -> Connection[Contact]:
        order = order_by or ContactOrder()
        page = await crm_contacts.list_contacts(
            info.context,
            first=first,
            after=after,
            filter=contact_filter(filter),
            order_field=order.field.value,
            descending=order.direction is OrderDirection.DESC,
            with_owner=selects(info, "contacts", "edges", "node", "owner"),
            with_open_tasks=selects(info, "contacts", "edges", "node", "openTasks"),
        )
        users: dict[int, User] = {}
        return Connection.of(page, lambda row: Contact.from_values(row, users))


@strawberry.type
class Mutation:
    @mutation(operation=crm_contacts.create_contact, description="Create a contact.")
    async def create_contact(self, info: Info, input: CreateContactInput) -> CreateContactPayload:
        row = await crm_contacts.create_contact(info.context, provided(input, ids=USER_IDS))
        return CreateContactPayload(contact=Contact.from_row(row))

    @mutation(operation=crm_contacts.update_contact, description="Change a contact.")
    async def update_contact(self, info: Info, input: UpdateContactInput) -> UpdateContactPayload:
        row = await crm_contacts.update_contact(
            info.context,
            decode_id(input.id, "Contact"),
            provided(input, ids=USER_IDS, skip=("id",)),
        )
        return UpdateContactPayload(contact=Contact.from_row(row))

    @mutation(
        operation=crm_contacts.delete_contact,
        description="Delete a contact; its leads and tasks stay, unlinked.",
    )
    async def delete_contact(self, info: Info, input: DeleteContactInput) -> DeleteContactPayload:
        deleted = await crm_contacts.delete_contact(info.context, decode_id(input.id, "Contact"))
        return DeleteContactPayload(deleted_id=encode_id("Contact", deleted))

    @mutation(
        operation=crm_contacts.upsert_contacts,
        description=f"Create or update contacts by external id ({UPSERT_LIMIT} per call); "
        "each item succeeds or fails on its own.",
    )
    async def upsert_contacts(
        self, info: Info, input: UpsertContactsInput
    ) -> UpsertContactsPayload:
        items = [_upsert_item(item) for item in input.items]
        return UpsertContactsPayload.of(await crm_contacts.upsert_contacts(info.context, items))


def _upsert_item(item: Any) -> dict[str, Any]:
    """Decode ids item by item: a bad id fails its item, not the batch."""
    try:
        return provided(item, ids=USER_IDS)
    except GatewayError as exc:
        return {"external_id": item.external_id, crm.ITEM_ERROR: exc}
