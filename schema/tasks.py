"""CRM tasks: to-dos for members, linked to a lead or a contact."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import tasks as models
from models.tasks import TaskStatus
from resolvers import crm
from resolvers import leads as crm_leads
from resolvers import tasks as crm_tasks
from schema.accounts import User
from schema.contacts import AFTER, FIRST, Contact, optional_id, provided
from schema.leads import Lead
from schema.permissions import mutation, query
from schema.relay import Connection, ModelNode, OrderDirection, decode_id, encode_id

strawberry.enum(
    TaskStatus,
    description="OPEN until DONE (completedAt is set) or CANCELLED; either can be reopened.",
)


@strawberry.type(description="A to-do for a member, about a lead or a contact.")
class Task(ModelNode):
    _model: ClassVar[type] = models.Task
    _permission: ClassVar[str] = "crm:read"
    id: relay.NodeID[int]
    title: str = strawberry.field(description="What to do.")
    description: str = strawberry.field(description="Details.")
    status: TaskStatus = strawberry.field(description="Open, done or cancelled.")
    due_at: dt.datetime | None = strawberry.field(description="When it is due, if ever.")
    completed_at: dt.datetime | None = strawberry.field(description="When it was marked done.")
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    updated_at: dt.datetime = strawberry.field(description="When it last changed.")
    _assignee_id: strawberry.Private[int | None] = None
    _lead_id: strawberry.Private[int | None] = None
    _contact_id: strawberry.Private[int | None] = None

    @classmethod
    def from_row(cls, row: Any) -> Task:
        return cls(
            id=row.id,
            title=row.title,
            description=row.description,
            status=TaskStatus(row.status),
            due_at=row.due_at,
            completed_at=row.completed_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            _assignee_id=row.assignee_id,
            _lead_id=row.lead_id,
            _contact_id=row.contact_id,
        )

    @classmethod
    def from_values(cls, row: dict[str, Any]) -> Task:
        """From a plain row (`resolvers.tasks.TASK_COLUMNS`) of a list read or loader."""
        return cls(
            id=row["id"],
            title=row["title"],
            description=row["description"],
            status=TaskStatus(row["status"]),
            due_at=row["due_at"],
            completed_at=row["completed_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            _assignee_id=row["assignee_id"],
            _lead_id=row["lead_id"],
            _contact_id=row["contact_id"],
        )

    @strawberry.field(description="The member who should do it; null when unassigned.")
    async def assignee(self, info: Info) -> User | None:
        row = await crm.load_user(info.context, self._assignee_id)
        return None if row is None else User.from_row(row)

    @strawberry.field(description="The lead it is about, if any.")
    async def lead(self, info: Info) -> Lead | None:
        row = await crm_leads.load_lead(info.context, self._lead_id)
        return None if row is None else Lead.from_row(row)

    @strawberry.field(description="The contact it is about, if any.")
    async def contact(self, info: Info) -> Contact | None:
        row = await crm.load_contact(info.context, self._contact_id)
        return None if row is None else Contact.from_row(row)


@strawberry.enum(description="Fields tasks can be ordered by.")
class TaskOrderField(Enum):
    TITLE = "title"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"


@strawberry.input(description="How to order tasks; ties are broken by id.")
class TaskOrder:
    field: TaskOrderField = strawberry.field(
        default=TaskOrderField.CREATED_AT, description="The field to order by."
    )
    direction: OrderDirection = strawberry.field(
        default=OrderDirection.ASC, description="Ascending or descending."
    )


@strawberry.input(description="Which tasks to list; all conditions must hold.")
class TaskFilter:
    status: list[TaskStatus] | None = strawberry.field(
        default=None, description="Only tasks in one of these states."
    )
    assignee_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Only tasks assigned to this member (a User id)."
    )
    due_before: dt.datetime | None = strawberry.field(
        default=None, description="Only tasks due before this time."
    )
    due_after: dt.datetime | None = strawberry.field(
        default=None, description="Only tasks due at or after this time."
    )
    lead_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Only tasks about this lead."
    )
    contact_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Only tasks about this contact."
    )


@strawberry.input(description="A new task; link it to a lead or a contact, not both.")
class CreateTaskInput:
    title: str = strawberry.field(description="What to do, 1 to 200 characters.")
    description: str | None = strawberry.field(
        default=strawberry.UNSET, description="Details, at most 10,000 characters."
    )
    assignee_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="Who should do it (a User id of this organization)."
    )
    due_at: dt.datetime | None = strawberry.field(
        default=strawberry.UNSET, description="When it is due (with a time zone offset)."
    )
    status: TaskStatus | None = strawberry.field(
        default=strawberry.UNSET, description="Initial state (default OPEN)."
    )
    lead_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="The lead it is about."
    )
    contact_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="The contact it is about."
    )


@strawberry.input(description="Changes to a task; omitted fields stay, null clears.")
class UpdateTaskInput:
    id: relay.GlobalID = strawberry.field(description="The task to change.")
    title: str | None = strawberry.field(default=strawberry.UNSET, description="Title.")
    description: str | None = strawberry.field(default=strawberry.UNSET, description="Details.")
    assignee_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="Who should do it; null unassigns."
    )
    due_at: dt.datetime | None = strawberry.field(
        default=strawberry.UNSET, description="When it is due; null for never."
    )
    status: TaskStatus | None = strawberry.field(
        default=strawberry.UNSET, description="New state; DONE sets completedAt."
    )
    lead_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="The lead; null unlinks."
    )
    contact_id: relay.GlobalID | None = strawberry.field(
        default=strawberry.UNSET, description="The contact; null unlinks."
    )


@strawberry.input(description="The task to delete.")
class DeleteTaskInput:
    id: relay.GlobalID = strawberry.field(description="The task to delete.")


@strawberry.type(description="The new task.")
class CreateTaskPayload:
    task: Task = strawberry.field(description="The task as stored.")


@strawberry.type(description="The changed task.")
class UpdateTaskPayload:
    task: Task = strawberry.field(description="The task as stored.")


@strawberry.type(description="The deleted task's id.")
class DeleteTaskPayload:
    deleted_id: relay.GlobalID = strawberry.field(description="Id of the deleted task.")


TASK_IDS = {"assignee_id": "User", "lead_id": "Lead", "contact_id": "Contact"}


def task_filter(f: TaskFilter | None) -> crm_tasks.TaskFilter | None:
    if f is None:
        return None
    return crm_tasks.TaskFilter(
        statuses=None if f.status is None else [s.value for s in f.status],
        assignee_id=optional_id(f.assignee_id, "User"),
        due_before=f.due_before,
        due_after=f.due_after,
        lead_id=optional_id(f.lead_id, "Lead"),
        contact_id=optional_id(f.contact_id, "Contact"),
    )


@strawberry.type
class Query:
    @query(operation=crm_tasks.list_tasks, description="The organization's tasks.")
    async def tasks(
        self,
        info: Info,
        first: FIRST = None,
        after: AFTER = None,
        filter: Annotated[
            TaskFilter | None, strawberry.argument(description="Conditions to match.")
        ] = None,
        order_by: Annotated[
            TaskOrder | None, strawberry.argument(description="Sort order (default: oldest first).")
        ] = None,
    ) -> Connection[Task]:
        order = order_by or TaskOrder()
        page = await crm_tasks.list_tasks(
            info.context,
            first=first,
            after=after,
            filter=task_filter(filter),
            order_field=order.field.value,
            descending=order.direction is OrderDirection.DESC,
        )
        return Connection.of(page, Task.from_row)


@strawberry.type
class Mutation:
    @mutation(operation=crm_tasks.create_task, description="Create a task.")
    async def create_task(self, info: Info, input: CreateTaskInput) -> CreateTaskPayload:
        row = await crm_tasks.create_task(info.context, provided(input, ids=TASK_IDS))
        return CreateTaskPayload(task=Task.from_row(row))

    @mutation(
        operation=crm_tasks.update_task,
        description="Change a task (also: complete or cancel it).",
    )
    async def update_task(self, info: Info, input: UpdateTaskInput) -> UpdateTaskPayload:
        row = await crm_tasks.update_task(
            info.context, decode_id(input.id, "Task"), provided(input, ids=TASK_IDS, skip=("id",))
        )
        return UpdateTaskPayload(task=Task.from_row(row))

    @mutation(operation=crm_tasks.delete_task, description="Delete a task.")
    async def delete_task(self, info: Info, input: DeleteTaskInput) -> DeleteTaskPayload:
        deleted = await crm_tasks.delete_task(info.context, decode_id(input.id, "Task"))
        return DeleteTaskPayload(deleted_id=encode_id("Task", deleted))
