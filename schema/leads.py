"""CRM leads: sales opportunities with a status pipeline and a monetary value."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from kit.errors import GatewayError
from kit.money import display_amount
from models import leads as models
from models.leads import LeadStatus
from resolvers import crm
from resolvers import leads as crm_leads
from resolvers import tasks as crm_tasks
from resolvers.crm import UpsertResult
from schema.accounts import User
from schema.contacts import (
    AFTER,
    FIRST,
    UPSERT_LIMIT,
    Contact,
    UpsertItemError,
    UpsertOutcome,
    optional_id,
    outcome_counts,
    provided,
)
from schema.permissions import mutation, query
from schema.relay import Connection, ModelNode, OrderDirection, decode_id, encode_id

if TYPE_CHECKING:
    from schema.tasks import Task

TaskRef = Annotated["Task", strawberry.lazy("schema.tasks")]

strawberry.enum(
    LeadStatus,
    description="Pipeline stage: NEW → CONTACTED → QUALIFIED → WON or LOST. Open stages move "
    "forward or one step back; LOST from any open stage; WON only from QUALIFIED; WON and "
    "LOST are final.",
)


@strawberry.type(description="A sales opportunity moving through the pipeline.")
class Lead(ModelNode):
    _model: ClassVar[type] = models.Lead
    _permission: ClassVar[str] = "crm:read"
    id: relay.NodeID[int]
    title: str = strawberry.field(description="What the opportunity is.")
    status: LeadStatus = strawberry.field(description="Pipeline stage.")
    value: Decimal = strawberry.field(description="Expected deal value in `currency`.")
    currency: str = strawberry.field(description="ISO 4217 code of `value`.")
    source: str = strawberry.field(description="Where the lead came from (free text).")
    external_id: str | None = strawberry.field(
        description="Id in the organization's external CRM; unique in the organization."
    )
    closed_at: dt.datetime | None = strawberry.field(description="When it was won or lost.")
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    updated_at: dt.datetime = strawberry.field(description="When it last changed.")
    _owner_id: strawberry.Private[int | None] = None
    _contact_id: strawberry.Private[int | None] = None

    @classmethod
    def from_row(cls, row: Any) -> Lead:
        return cls(
            id=row.id,
            title=row.title,
            status=LeadStatus(row.status),
            value=display_amount(row.amount, row.currency),
            currency=row.currency,
            source=row.source,
            external_id=row.external_id,
            closed_at=row.closed_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            _owner_id=row.owner_id,
            _contact_id=row.contact_id,
        )

    @strawberry.field(description="The member who owns this lead; null when unassigned.")
    async def owner(self, info: Info) -> User | None:
        row = await crm.load_user(info.context, self._owner_id)
        return None if row is None else User.from_row(row)

    @strawberry.field(description="The contact this lead is about, if any.")
    async def contact(self, info: Info) -> Contact | None:
        row = await crm.load_contact(info.context, self._contact_id)
        return None if row is None else Contact.from_row(row)

    @strawberry.field(description="Open tasks about this lead, soonest due first.")
    async def open_tasks(self, info: Info) -> list[TaskRef]:
        from schema.tasks import Task

        rows = await crm_tasks.open_tasks_of_lead(info.context, self.id)
        return [Task.from_values(t) for t in rows]


@strawberry.enum(description="Fields leads can be ordered by.")
class LeadOrderField(Enum):
    TITLE = "title"
    VALUE = "amount"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"


@strawberry.input(description="How to order leads; ties are broken by id.")
class LeadOrder:
    field: LeadOrderField = strawberry.field(
        default=LeadOrderField.CREATED_AT, description="The field to order by."
    )
    direction: OrderDirection = strawberry.field(
        default=OrderDirection.ASC, description="Ascending or descending."
    )


@strawberry.input(description="Which leads to list; all conditions must hold.")
class LeadFilter:
    status: list[LeadStatus] | None = strawberry.field(
        default=None, description="Only leads in one of these stages."
    )
    owner_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Only leads owned by this member (a User id)."
    )
    contact_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Only leads about this contact."
    )
    source: str | None = strawberry.field(default=None, description="Only leads from this source.")


@strawberry.input(description="A new lead.")
class CreateLeadInput:
    title: str = strawberry.field(description="What the opportunity is, 1 to 200 characters.")
    status: LeadStatus | None = strawberry.field(
        default=strawberry.UNSET, description="Initial stage (default NEW)."
    )
    value: Decimal | None = strawberry.field(
        default=strawberry.UNSET, description="Expected value, not negative (default 0)."
    )
    currency: str | None = strawberry.field(
        default=strawberry.UNSET, description="ISO 4217 code (default USD)."
    )
    source: str | None = strawberry.field(
        default=strawberry.UNSET, description="Where it came from, at most 100 characters."
    )
    contact_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="The contact it is about."
    )
    owner_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="Owning member (a User id of this organization)."
    )
    external_id: str | None = strawberry.field(
        default=strawberry.UNSET, description="Id in the external CRM; unique in the organization."
    )


@strawberry.input(description="Changes to a lead; omitted fields stay, null clears.")
class UpdateLeadInput:
    id: relay.GlobalID = strawberry.field(description="The lead to change.")
    title: str | None = strawberry.field(default=strawberry.UNSET, description="Title.")
    status: LeadStatus | None = strawberry.field(
        default=strawberry.UNSET, description="New stage; must be an allowed move."
    )
    value: Decimal | None = strawberry.field(default=strawberry.UNSET, description="Value.")
    currency: str | None = strawberry.field(default=strawberry.UNSET, description="ISO 4217 code.")
    source: str | None = strawberry.field(default=strawberry.UNSET, description="Source.")
    contact_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="The contact; null unlinks."
    )
    owner_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="Owning member; null unassigns."
    )
    external_id: str | None = strawberry.field(
        default=strawberry.UNSET, description="Id in the external CRM; null clears it."
    )


@strawberry.input(description="The lead to delete.")
class DeleteLeadInput:
    id: relay.GlobalID = strawberry.field(description="The lead to delete.")


@strawberry.input(description="One lead of a sync batch, matched by `externalId`.")
class LeadUpsertItem:
    external_id: str = strawberry.field(description="Id in the external CRM: the match key.")
    title: str | None = strawberry.field(
        default=strawberry.UNSET, description="Title; required when the lead is new."
    )
    status: LeadStatus | None = strawberry.field(
        default=strawberry.UNSET, description="Stage; changes of existing leads must be allowed."
    )
    value: Decimal | None = strawberry.field(default=strawberry.UNSET, description="Value.")
    currency: str | None = strawberry.field(default=strawberry.UNSET, description="ISO 4217 code.")
    source: str | None = strawberry.field(default=strawberry.UNSET, description="Source.")
    contact_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="The contact, by id."
    )
    contact_external_id: str | None = strawberry.field(
        default=strawberry.UNSET, description="The contact, by its external id (instead of id)."
    )
    owner_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="Owning member; null unassigns."
    )


@strawberry.input(description=f"A batch of leads to create or update ({UPSERT_LIMIT}).")
class UpsertLeadsInput:
    items: list[LeadUpsertItem] = strawberry.field(
        description=f"The leads, {UPSERT_LIMIT}; omitted fields of existing ones stay."
    )


@strawberry.type(description="The new lead.")
class CreateLeadPayload:
    lead: Lead = strawberry.field(description="The lead as stored.")


@strawberry.type(description="The changed lead.")
class UpdateLeadPayload:
    lead: Lead = strawberry.field(description="The lead as stored.")


@strawberry.type(description="The deleted lead's id.")
class DeleteLeadPayload:
    deleted_id: relay.GlobalID = strawberry.field(description="Id of the deleted lead.")


@strawberry.type(description="What happened to one item of `upsertLeads`.")
class LeadUpsertResult:
    index: int = strawberry.field(description="Position of the item in `input.items`.")
    external_id: str | None = strawberry.field(description="The item's external id.")
    outcome: UpsertOutcome = strawberry.field(description="Created, updated, unchanged or failed.")
    lead: Lead | None = strawberry.field(description="The lead as stored; null on failure.")
    error: UpsertItemError | None = strawberry.field(description="Why it failed; null otherwise.")


@strawberry.type(description="Per-item results of a lead sync batch.")
class UpsertLeadsPayload:
    results: list[LeadUpsertResult] = strawberry.field(description="One result per item.")
    created: int = strawberry.field(description="How many leads were created.")
    updated: int = strawberry.field(description="How many were changed.")
    unchanged: int = strawberry.field(description="How many already matched.")
    failed: int = strawberry.field(description="How many items failed.")

    @classmethod
    def of(cls, results: list[UpsertResult]) -> UpsertLeadsPayload:
        return cls(
            results=[
                LeadUpsertResult(
                    index=r.index,
                    external_id=r.external_id,
                    outcome=UpsertOutcome(r.outcome),
                    lead=None if r.row is None or r.error else Lead.from_row(r.row),
                    error=None if r.error is None else UpsertItemError.of(r.error),
                )
                for r in results
            ],
            **outcome_counts(results),
        )


LEAD_IDS = {"owner_id": "User", "contact_id": "Contact"}


def lead_data(input: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    data = provided(input, ids=LEAD_IDS, skip=skip)
    if "value" in data:
        data["amount"] = data.pop("value")
    if "status" in data and data["status"] is not None:
        data["status"] = LeadStatus(data["status"])
    return data


def _upsert_item(item: Any) -> dict[str, Any]:
    try:
        return lead_data(item)
    except GatewayError as exc:
        return {"external_id": item.external_id, crm.ITEM_ERROR: exc}


def lead_filter(f: LeadFilter | None) -> crm_leads.LeadFilter | None:
    if f is None:
        return None
    return crm_leads.LeadFilter(
        statuses=None if f.status is None else [s.value for s in f.status],
        owner_id=optional_id(f.owner_id, "User"),
        contact_id=optional_id(f.contact_id, "Contact"),
        source=f.source,
    )


@strawberry.type
class Query:
    @query(operation=crm_leads.list_leads, description="The organization's leads.")
    async def leads(
        self,
        info: Info,
        first: FIRST = None,
        after: AFTER = None,
        filter: Annotated[
            LeadFilter | None, strawberry.argument(description="Conditions to match.")
        ] = None,
        order_by: Annotated[
            LeadOrder | None, strawberry.argument(description="Sort order (default: oldest first).")
        ] = None,
    ) -> Connection[Lead]:
        order = order_by or LeadOrder()
        page = await crm_leads.list_leads(
            info.context,
            first=first,
            after=after,
            filter=lead_filter(filter),
            order_field=order.field.value,
            descending=order.direction is OrderDirection.DESC,
        )
        return Connection.of(page, Lead.from_row)


@strawberry.type
class Mutation:
    @mutation(operation=crm_leads.create_lead, description="Create a lead.")
    async def create_lead(self, info: Info, input: CreateLeadInput) -> CreateLeadPayload:
        row = await crm_leads.create_lead(info.context, lead_data(input))
        return CreateLeadPayload(lead=Lead.from_row(row))

    @mutation(
        operation=crm_leads.update_lead,
        description="Change a lead; status moves follow the pipeline.",
    )
    async def update_lead(self, info: Info, input: UpdateLeadInput) -> UpdateLeadPayload:
        row = await crm_leads.update_lead(
            info.context, decode_id(input.id, "Lead"), lead_data(input, skip=("id",))
        )
        return UpdateLeadPayload(lead=Lead.from_row(row))

    @mutation(
        operation=crm_leads.delete_lead,
        description="Delete a lead; its tasks stay, unlinked.",
    )
    async def delete_lead(self, info: Info, input: DeleteLeadInput) -> DeleteLeadPayload:
        deleted = await crm_leads.delete_lead(info.context, decode_id(input.id, "Lead"))
        return DeleteLeadPayload(deleted_id=encode_id("Lead", deleted))

    @mutation(
        operation=crm_leads.upsert_leads,
        description=f"Create or update leads by external id ({UPSERT_LIMIT} per call); "
        "each item succeeds or fails on its own.",
    )
    async def upsert_leads(self, info: Info, input: UpsertLeadsInput) -> UpsertLeadsPayload:
        items = [_upsert_item(item) for item in input.items]
        return UpsertLeadsPayload.of(await crm_leads.upsert_leads(info.context, items))
