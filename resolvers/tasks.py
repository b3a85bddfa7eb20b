"""CRM tasks: assigned to a member, due at a time, linked to a lead or a contact."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Forbidden, NotFound
from models.contacts import plain_rows
from models.leads import Lead
from models.tasks import Task, TaskStatus
from models.tenancy import get_scoped, scoped
from resolvers.ai.completion import complete
from resolvers.ai.plan import make_plan
from resolvers.ai.types import ChatRequest, CompletionResult, MessageIn
from resolvers.context import Context
from resolvers.crm import (
    Problems,
    api_fields,
    changed,
    emit_change,
    order_of,
    require_contact,
    require_member,
    text,
)
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

TASK_ORDER_FIELDS = frozenset({"id", "title", "created_at", "updated_at"})
_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.UTC)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# What the Task type shows; list reads and loaders select exactly these.
TASK_COLUMNS = (
    "id",
    "title",
    "description",
    "status",
    "due_at",
    "completed_at",
    "created_at",
    "updated_at",
    "assignee_id",
    "lead_id",
    "contact_id",
)


def _open_first(task: dict[str, Any]) -> tuple[dt.datetime, int]:
    return (task["due_at"] or _FAR_FUTURE, task["id"])


def open_tasks_loader(ctx: Context, link: str) -> Any:
    """Open tasks (plain dicts of TASK_COLUMNS) per contact (or per lead) id, soonest due
    first; one query per batch."""
    name = f"crm.open_tasks.{link}"
    existing = ctx.known_loader(name)
    if existing is not None:
        return existing
    tenant_id = ctx.tenant_id

    async def batch(ids: list[int]) -> list[list[dict[str, Any]]]:
        rows = await plain_rows(
            scoped(Task, tenant_id).filter(
                **{f"{link}__in": list(set(ids))}, status=TaskStatus.OPEN
            ),
            TASK_COLUMNS,
        )
        grouped: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for row in rows:
            grouped[row[link]].append(row)
        for tasks in grouped.values():
            tasks.sort(key=_open_first)
        return [grouped[i] for i in ids]

    return ctx.loader(name, batch)


async def open_tasks_of_contact(ctx: Context, contact_id: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await open_tasks_loader(ctx, "contact_id").load(contact_id)
    return result


async def open_tasks_of_lead(ctx: Context, lead_id: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await open_tasks_loader(ctx, "lead_id").load(lead_id)
    return result


async def require_lead(tenant_id: int, lead_id: int | None, field_name: str) -> None:
    if lead_id is not None and not await scoped(Lead, tenant_id).filter(id=lead_id).exists():
        raise NotFound("Lead not found.", field=field_name)


def clean_task(data: dict[str, Any], current: Task | None, problems: Problems) -> None:
    text(data, "title", problems, max_length=200, required=True, creating=current is None)
    text(data, "description", problems, max_length=10_000)
    if "due_at" in data and data["due_at"] is not None and data["due_at"].tzinfo is None:
        problems.add("due_at", "needs a time zone offset")
    lead_id = data["lead_id"] if "lead_id" in data else (current.lead_id if current else None)
    contact_id = (
        data["contact_id"] if "contact_id" in data else (current.contact_id if current else None)
    )
    if lead_id is not None and contact_id is not None:
        problems.add(
            "lead_id" if "lead_id" in data else "contact_id",
            "a task links to a lead or to a contact, not both",
        )
    if "status" in data:
        status = data["status"]
        if status is None:
            problems.add("status", "cannot be null")
        else:
            status = TaskStatus(status)
            data["status"] = status
            if current is None or status != current.status:
                data["completed_at"] = now() if status == TaskStatus.DONE else None


async def _check_links(tenant_id: int, data: dict[str, Any]) -> None:
    if "assignee_id" in data:
        await require_member(tenant_id, data["assignee_id"], "assigneeId")
    if "lead_id" in data:
        await require_lead(tenant_id, data["lead_id"], "leadId")
    if "contact_id" in data:
        await require_contact(tenant_id, data["contact_id"], "contactId")


@dataclass
class TaskFilter:
    statuses: list[str] | None = None
    assignee_id: int | None = None
    due_before: dt.datetime | None = None
    due_after: dt.datetime | None = None
    lead_id: int | None = None
    contact_id: int | None = None


@operation("crm:read")
async def list_tasks(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    filter: TaskFilter | None,
    order_field: str = "created_at",
    descending: bool = False,
) -> Page[Task]:
    tenant_id = ctx.require_principal().tenant_id
    order = order_of(order_field, descending, TASK_ORDER_FIELDS)
    qs = scoped(Task, tenant_id)
    f = filter or TaskFilter()
    if f.statuses is not None:
        qs = qs.filter(status__in=[TaskStatus(s) for s in f.statuses])
    if f.assignee_id is not None:
        await require_member(tenant_id, f.assignee_id, "filter.assigneeId")
        qs = qs.filter(assignee_id=f.assignee_id)
    for name, value in (("dueBefore", f.due_before), ("dueAfter", f.due_after)):
        if value is not None and value.tzinfo is None:
            raise BadUserInput(
                "Times need a time zone offset.", details={f"filter.{name}": "needs a time zone"}
            )
    if f.due_before is not None:
        qs = qs.filter(due_at__lt=f.due_before)
    if f.due_after is not None:
        qs = qs.filter(due_at__gte=f.due_after)
    if f.lead_id is not None:
        await require_lead(tenant_id, f.lead_id, "filter.leadId")
        qs = qs.filter(lead_id=f.lead_id)
    if f.contact_id is not None:
        await require_contact(tenant_id, f.contact_id, "filter.contactId")
        qs = qs.filter(contact_id=f.contact_id)
    return await page_of(ctx, qs, first=first, after=after, order=order)


@operation("crm:write")
async def create_task(ctx: Context, data: dict[str, Any]) -> Task:
    tenant_id = ctx.require_principal().tenant_id
    problems = Problems()
    clean_task(data, None, problems)
    problems.check()
    await _check_links(tenant_id, data)
    row = Task(tenant_id=tenant_id, **data)
    async with in_transaction() as conn:
        await row.save(using_db=conn)
        await emit_change(conn, tenant_id, "task.created", "Task", row.id)
    return row


@operation("crm:write")
async def update_task(ctx: Context, task_id: int, changes: dict[str, Any]) -> Task:
    tenant_id = ctx.require_principal().tenant_id
    row = await get_scoped(Task, tenant_id, task_id)
    problems = Problems()
    clean_task(changes, row, problems)
    problems.check()
    await _check_links(tenant_id, changes)
    diff = changed(row, changes)
    if not diff:
        return row
    completed = diff.get("status") == TaskStatus.DONE
    # Completing is its own event; anything else that changed is `task.updated`.
    others = api_fields(k for k in diff if not (completed and k in ("status", "completed_at")))
    row.update_from_dict(diff)
    async with in_transaction() as conn:
        await row.save(update_fields=[*diff, "updated_at"], using_db=conn)
        if completed:
            await emit_change(conn, tenant_id, "task.completed", "Task", row.id)
        if others:
            await emit_change(conn, tenant_id, "task.updated", "Task", row.id, fields=others)
    return row


@operation("crm:delete")
async def delete_task(ctx: Context, task_id: int) -> int:
    tenant_id = ctx.require_principal().tenant_id
    async with in_transaction() as conn:
        if not await scoped(Task, tenant_id).filter(id=task_id).using_db(conn).delete():
            raise NotFound("Task not found.")
        await emit_change(conn, tenant_id, "task.deleted", "Task", task_id)
    return task_id


# Day summary (through the AI completion path) ----------------------------------------

SUMMARY_SYSTEM_PROMPT = (
    "You are a CRM assistant. Summarise the user's tasks for the day in a few short "
    "sentences: what is due, what is overdue or open, what is done, and what to do first."
)
MAX_SUMMARY_TASKS = 200


@operation("ai:use")
async def generate_task_summary(
    ctx: Context, day: dt.date, model: str | None = None
) -> CompletionResult:
    """A summary of the caller's CRM tasks due on `day` (a UTC day), through the AI path."""
    principal = ctx.require_principal()
    if principal.user_id is None or principal.api_key_id is not None:
        raise Forbidden("Task summaries are for signed-in members (API keys own no tasks).")
    lo = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    hi = lo + dt.timedelta(days=1)
    tasks = (
        await scoped(Task, principal.tenant_id)
        .filter(assignee_id=principal.user_id, due_at__gte=lo, due_at__lt=hi)
        .exclude(status=TaskStatus.CANCELLED)
        .order_by("due_at", "id")
        .limit(MAX_SUMMARY_TASKS)
    )
    lines = [f"Tasks due on {day.isoformat()} ({len(tasks)}):"]
    for task in tasks:
        due = task.due_at.strftime("%H:%M") if task.due_at else "--:--"
        line = f"- [{task.status.value}] {due} {task.title.strip()}"
        if task.description.strip():
            line += f" — {' '.join(task.description.split())[:300]}"
        lines.append(line)
    if not tasks:
        lines.append("- (no tasks)")
    request = ChatRequest(
        messages=[
            MessageIn("SYSTEM", SUMMARY_SYSTEM_PROMPT),
            MessageIn("USER", "\n".join(lines)),
        ],
        model=model,
        max_tokens=min(400, ctx.settings.ai_max_output_tokens),
    )
    plan = await make_plan(
        ctx, principal, request, "task_summary", title=f"Tasks for {day.isoformat()}"
    )
    return await complete(ctx, plan)
