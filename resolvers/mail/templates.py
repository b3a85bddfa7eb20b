"""The mail templates: Jinja2 files under `resolvers/templates/mail/` (`<name>.html`,
autoescaped, and `<name>.txt`), and the catalogue that says what each one needs.

Every template extends `_layout.html`, which shows the organization's name and, for a
broadcast, the unsubscribe link. A variable a template needs and was not given is an
error naming it (StrictUndefined), never an empty hole in a mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2

from kit.errors import BadUserInput, NotFound
from kit.text import header_safe
from models.tenants import Tenant
from resolvers.context import Context
from resolvers.operations import operation

MAX_VARIABLES = 50
MAX_VARIABLE_CHARS = 20_000

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("resolvers", "templates/mail"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
# Subjects are one header line: never HTML-escaped, made one line after rendering.
_subjects = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)  # noqa: S701


@dataclass(frozen=True)
class Variable:
    name: str
    description: str
    sample: str
    required: bool = True


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    subject: str  # a Jinja expression over the variables
    variables: tuple[Variable, ...]
    # Account mail (tokens) is written by the gateway only; the rest `sendEmail` may use.
    sendable: bool = True

    def samples(self) -> dict[str, str]:
        return {v.name: v.sample for v in self.variables}


def _v(name: str, description: str, sample: str, required: bool = True) -> Variable:
    return Variable(name, description, sample, required)


_LINK = _v("link", "A link to open in the front end.", "https://app.example.com/x/1", False)

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "verify_email",
            "Confirm the address of a new account.",
            "Confirm your email address",
            (
                _v("name", "The person's name.", "Ada Lovelace", False),
                _v("token", "The single-use token.", "tok_sample"),
                _v("link", "The front end's confirmation link.", "https://app.example.com/v"),
                _v("hours", "Hours until the token expires.", "24"),
            ),
            sendable=False,
        ),
        Template(
            "reset_password",
            "Reset a forgotten password.",
            "Reset your password",
            (
                _v("token", "The single-use token.", "tok_sample"),
                _v("link", "The front end's reset link.", "https://app.example.com/r"),
                _v("minutes", "Minutes until the token expires.", "60"),
            ),
            sendable=False,
        ),
        Template(
            "invitation",
            "Invite a person to the organization.",
            "You are invited to join {{ organization }} on Switchboard",
            (
                _v("inviter", "Who invites.", "Grace Hopper"),
                _v("role", "The role offered.", "MANAGER"),
                _v("token", "The single-use token.", "tok_sample"),
                _v("link", "The front end's accept link.", "https://app.example.com/a"),
                _v("hours", "Hours until the invitation expires.", "168"),
            ),
            sendable=False,
        ),
        Template(
            "task_assigned",
            "A task was assigned to the recipient.",
            "Task assigned: {{ task_title }}",
            (
                _v("assigner", "Who assigned it.", "Grace Hopper"),
                _v("task_title", "The task.", "Call Acme back"),
                _v("due", "When it is due.", "2026-12-24 10:00", False),
                _v("description", "More about it.", "They asked for a quote.", False),
                _LINK,
            ),
        ),
        Template(
            "lead_assigned",
            "A new lead was assigned to the recipient.",
            "New lead: {{ lead_name }}",
            (
                _v("lead_name", "The lead.", "Jane Roe"),
                _v("company", "Its company.", "Initech", False),
                _v("source", "Where it came from.", "website form", False),
                _LINK,
            ),
        ),
        Template(
            "lead_status_changed",
            "A lead the recipient follows changed status.",
            "{{ lead_name }} is now {{ new_status }}",
            (
                _v("lead_name", "The lead.", "Jane Roe"),
                _v("old_status", "Its status before.", "CONTACTED"),
                _v("new_status", "Its status now.", "QUALIFIED"),
                _v("changed_by", "Who changed it.", "Grace Hopper", False),
                _LINK,
            ),
        ),
        Template(
            "meeting_invitation",
            "An invitation to a video meeting, with its join link.",
            "Invitation: {{ topic }}",
            (
                _v("topic", "The meeting's topic.", "Quarterly review"),
                _v("join_url", "Where to join.", "https://zoom.us/j/85746065432?pwd=abc"),
                _v("start", "When it starts.", "2026-12-24 10:00 UTC", False),
                _v("duration", "How long, in minutes.", "45", False),
                _v("host", "Who invites.", "Grace Hopper", False),
                _v("name", "The invitee's name.", "Ada", False),
                _v("agenda", "What it is about.", "Next quarter's plan.", False),
            ),
        ),
        Template(
            "project_update",
            "News about a project.",
            "{{ project }}: update",
            (
                _v("project", "The project.", "Website relaunch"),
                _v("summary", "What happened.", "The new design is live."),
                _v("author", "Who writes.", "Grace Hopper", False),
                _LINK,
            ),
        ),
        Template(
            "invoice_processed",
            "An invoice was read and is ready for review.",
            "Invoice {{ invoice_number }} processed",
            (
                _v("invoice_number", "The invoice's number.", "INV-2026-0042"),
                _v("amount", "Its total with currency.", "1,250.00 EUR"),
                _v("status", "Where it is now.", "READY_FOR_REVIEW"),
                _v("vendor", "Who sent it.", "Initech GmbH", False),
                _v("due_date", "When it is due.", "2026-12-31", False),
                _LINK,
            ),
        ),
        Template(
            "system_alert",
            "An operational alert.",
            "[{{ severity }}] {{ title }}",
            (
                _v("severity", "INFO, WARNING or CRITICAL.", "WARNING"),
                _v("title", "What happened, in a line.", "Stripe is degraded"),
                _v("message", "The details.", "Payments are retried automatically."),
                _LINK,
            ),
        ),
        Template(
            "admin_broadcast",
            "A message to many people of the organization (carries an unsubscribe link).",
            "{{ headline }}",
            (
                _v("headline", "The headline, also the subject.", "New features this month"),
                _v("message", "The message.", "Invoices are now read from your mailbox."),
                _v("name", "The recipient's name.", "Ada", False),
            ),
        ),
    )
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def get_template(name: str) -> Template:
    template = TEMPLATES.get(name)
    if template is None:
        raise NotFound("No such email template.", details={"template": f"unknown: {name[:60]}"})
    return template


def check_variables(variables: Any) -> dict[str, Any]:
    """Variables from a client: an object of at most MAX_VARIABLES short scalar values."""
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise BadUserInput("Variables must be an object.", details={"variables": "not an object"})
    if len(variables) > MAX_VARIABLES:
        raise BadUserInput("Too many variables.", details={"variables": f"at most {MAX_VARIABLES}"})
    clean: dict[str, Any] = {}
    for key, value in variables.items():
        if not isinstance(key, str) or not key.isidentifier() or len(key) > 60:
            raise BadUserInput("Invalid variable name.", details={"variables": str(key)[:60]})
        if value is not None and not isinstance(value, str | int | float | bool):
            raise BadUserInput(
                "Variables must be text, numbers or booleans.", details={key: "not a scalar"}
            )
        if isinstance(value, str):
            if len(value) > MAX_VARIABLE_CHARS or "\x00" in value:
                raise BadUserInput("Variable too long or not text.", details={key: "invalid"})
        clean[key] = value
    return clean


def render(
    name: str,
    variables: dict[str, Any],
    *,
    organization: str,
    unsubscribe_url: str | None = None,
) -> Rendered:
    """The subject, HTML (autoescaped) and text of template `name`. A required variable
    that is missing is BAD_USER_INPUT naming it; unknown ones are ignored."""
    template = get_template(name)
    missing = [v.name for v in template.variables if v.required and variables.get(v.name) is None]
    if missing:
        raise BadUserInput(
            "Template variables are missing.", details={m: "is required" for m in missing}
        )
    context: dict[str, Any] = {v.name: None for v in template.variables}
    context.update(variables)
    context.update(organization=organization, unsubscribe_url=unsubscribe_url)
    return Rendered(
        subject=header_safe(_subjects.from_string(template.subject).render(**context))[:300],
        html=_environment.get_template(f"{name}.html").render(**context),
        text=_environment.get_template(f"{name}.txt").render(**context),
    )


# Reading ------------------------------------------------------------------------------


@operation("mail:templates")
async def list_templates(ctx: Context) -> list[Template]:
    ctx.require("mail:templates")
    return list(TEMPLATES.values())


@operation("mail:templates")
async def preview_template(ctx: Context, name: str, variables: Any) -> Rendered:
    """Template `name` rendered with `variables`, the catalogue's samples filling the rest,
    and the caller's organization as sender."""
    principal = ctx.require("mail:templates")
    template = get_template(name)
    given = check_variables(variables)
    tenant = await Tenant.get(id=principal.tenant_id)
    return render(name, {**template.samples(), **given}, organization=tenant.name)
