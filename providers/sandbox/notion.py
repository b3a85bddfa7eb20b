"""Notion's public API (version 2022-06-28), emulated: the bot user, databases (retrieve,
create, query with filters, sorts and cursors), pages (create, retrieve, update), block
children (list, append), Notion's error bodies and its rate limit.

Workspaces are per integration key (a key containing `invalid` is refused, 401
`unauthorized`). Every workspace has one database from the start, shared with the
integration: `SANDBOX_DATABASE_ID`, with the properties Name (title), Email (email),
Company (rich_text), Tags (multi_select); others are made with `POST /v1/databases`. An
id that is no UUID is a 400 `validation_error`; a well-formed id the workspace does not
know is a 404 `object_not_found`, as Notion answers for a database not shared with the
integration.

Query filters: a property filter `{"property": name, <type>: {<condition>: value}}` with
`equals`, `does_not_equal`, `contains`, `does_not_contain`, `starts_with`, `ends_with`,
`is_empty`, `is_not_empty`, `greater_than`, `less_than` (numbers, dates); `contains` on a
multi_select is membership; a timestamp filter on `created_time` / `last_edited_time`
(`after`, `before`, `on_or_after`, `on_or_before`); and compound `and` / `or` (nested two
deep, as Notion allows). Sorts by property or timestamp, either direction. Cursors are
page ids, `page_size` 1..100.

The rate limit (`rate_per_second`, set from Python; off by default): more than that many
requests of one key within a second answer 429 `rate_limited` with `Retry-After`, as
Notion does past its average of three a second. `POST /_sandbox/faults` injects others.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.base import Sandbox, bearer

PROVIDER = "notion"
SANDBOX_DATABASE_ID = "5a4db0c1-7e57-4c0e-9a5e-5a4db0c10001"
MAX_TEXT = 2000  # Notion's bound on one rich text object's content
MAX_BLOCKS = 100  # children appended per request
MAX_PROPERTY_ITEMS = 100  # items of a multi_select / rich_text array
MAX_BODY = 512 * 1024

CONTACT_PROPERTIES: dict[str, dict[str, Any]] = {
    "Name": {"type": "title", "title": {}},
    "Email": {"type": "email", "email": {}},
    "Company": {"type": "rich_text", "rich_text": {}},
    "Tags": {"type": "multi_select", "multi_select": {"options": []}},
}
VALUE_TYPES = frozenset(
    {"title", "rich_text", "email", "url", "phone_number", "number", "checkbox",
     "select", "multi_select", "date"}
)  # fmt: skip


class NotionError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _norm(object_id: str) -> str:
    """A UUID in Notion's dashed form; NotionError when it is not one."""
    try:
        return str(uuid.UUID(object_id))
    except (ValueError, AttributeError, TypeError):
        raise NotionError(
            400, "validation_error", f"path failed validation: id should be a valid uuid, "
            f"instead was `{str(object_id)[:60]}`."
        ) from None  # fmt: skip


def _text(value: Any, where: str) -> list[dict[str, Any]]:
    """A rich text array as given, stored with its plain_text (as Notion answers it)."""
    if not isinstance(value, list) or len(value) > MAX_PROPERTY_ITEMS:
        raise NotionError(400, "validation_error", f"{where} should be an array of rich text.")
    out = []
    for item in value:
        content = item.get("text", {}).get("content") if isinstance(item, dict) else None
        if not isinstance(content, str):
            raise NotionError(400, "validation_error", f"{where}.text.content should be defined.")
        if len(content) > MAX_TEXT:
            raise NotionError(
                400, "validation_error",
                f"{where}.text.content.length should be ≤ `{MAX_TEXT}`, instead was "
                f"`{len(content)}`.",
            )  # fmt: skip
        out.append({
            "type": "text", "text": {"content": content, "link": None},
            "annotations": {"bold": False, "italic": False, "strikethrough": False,
                            "underline": False, "code": False, "color": "default"},
            "plain_text": content, "href": None,
        })  # fmt: skip
    return out


def plain(prop: dict[str, Any]) -> Any:
    """A page property's value as plain data (what filters and sorts compare)."""
    kind = prop.get("type")
    value = prop.get(kind) if kind else None
    if kind in ("title", "rich_text"):
        return "".join(t.get("plain_text", "") for t in value or [])
    if kind == "multi_select":
        return [o.get("name") for o in value or []]
    if kind == "select":
        return value.get("name") if value else None
    if kind == "date":
        return value.get("start") if value else None
    return value


class Workspace:
    def __init__(self, key_hash: str) -> None:
        self.bot_id = str(uuid.UUID(key_hash[:32]))
        self.databases: dict[str, dict[str, Any]] = {}
        self.pages: dict[str, dict[str, Any]] = {}  # insertion order = creation order
        self.children: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.database(SANDBOX_DATABASE_ID, "Contacts", CONTACT_PROPERTIES)

    def database(self, db_id: str, title: str, properties: dict[str, Any]) -> dict[str, Any]:
        props = {}
        for name, spec in properties.items():
            kind = spec.get("type") or next((k for k in spec if k in VALUE_TYPES), None)
            if kind not in VALUE_TYPES:
                raise NotionError(400, "validation_error", f"property {name} has no valid type.")
            props[name] = {"id": hashlib.sha1(name.encode()).hexdigest()[:4], "name": name,  # noqa: S324
                           "type": kind, kind: spec.get(kind) or {}}  # fmt: skip
        if sum(1 for p in props.values() if p["type"] == "title") != 1:
            raise NotionError(400, "validation_error", "a database has exactly one title property.")
        now = _now()
        db = {
            "object": "database", "id": db_id, "created_time": now, "last_edited_time": now,
            "title": _text([{"text": {"content": title}}], "title"),
            "properties": props, "parent": {"type": "workspace", "workspace": True},
            "url": f"https://www.notion.so/{db_id.replace('-', '')}", "archived": False,
            "in_trash": False,
        }  # fmt: skip
        self.databases[db_id] = db
        return db


class NotionSandbox(Sandbox):
    provider = PROVIDER

    def __init__(self) -> None:
        self.workspaces: dict[str, Workspace] = {}
        self.rate_per_second: float | None = None  # Notion's limit, when set
        self._hits: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        super().__init__()

    def reset_state(self) -> None:
        self.workspaces.clear()
        self._hits.clear()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/users/me", self._h(self.me), methods=["GET"]),
            Route("/v1/databases", self._h(self.create_database), methods=["POST"]),
            Route("/v1/databases/{id}", self._h(self.get_database), methods=["GET"]),
            Route("/v1/databases/{id}/query", self._h(self.query), methods=["POST"]),
            Route("/v1/pages", self._h(self.create_page), methods=["POST"]),
            Route("/v1/pages/{id}", self._h(self.page), methods=["GET", "PATCH"]),
            Route("/v1/blocks/{id}/children", self._h(self.children), methods=["GET", "PATCH"]),
        ]

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        defaults = {
            400: ("validation_error", "Request body failed validation."),
            401: ("unauthorized", "API token is invalid."),
            403: ("restricted_resource", "API token does not have access to this resource."),
            404: ("object_not_found", "Could not find object."),
            409: ("conflict_error", "Conflict occurred while saving. Please try again."),
            429: ("rate_limited", "You have been rate limited. Please try again in a few "
                                  "minutes."),
            500: ("internal_server_error", "Unexpected error occurred."),
            502: ("bad_gateway", "Bad gateway."),
            503: ("service_unavailable", "Notion is unavailable, try again later."),
            504: ("gateway_timeout", "Gateway timeout."),
        }  # fmt: skip
        default_code, default_message = defaults.get(status, ("internal_server_error", "Error."))
        body = {
            "object": "error", "status": status, "code": code or default_code,
            "message": message or default_message, "request_id": str(uuid.uuid4()),
        }  # fmt: skip
        return JSONResponse(body, status, headers=headers)

    # Plumbing -------------------------------------------------------------------------

    def _workspace(self, request: Request) -> Workspace:
        key = bearer(request)
        if not key:
            raise NotionError(401, "unauthorized", "API token is invalid.")
        if "invalid" in key:
            raise NotionError(401, "unauthorized", "API token is invalid.")
        if not request.headers.get("notion-version"):
            raise NotionError(
                400, "missing_version", "Notion-Version header failed validation: "
                "Notion-Version header should be defined."
            )  # fmt: skip
        slot = hashlib.sha256(key.encode()).hexdigest()
        self._limit(slot)
        if slot not in self.workspaces:
            self.workspaces[slot] = Workspace(slot)
        return self.workspaces[slot]

    def _limit(self, slot: str) -> None:
        if not self.rate_per_second:
            return
        now = time.monotonic()
        hits = self._hits[slot]
        while hits and now - hits[0] >= 1.0:
            hits.popleft()
        if len(hits) >= self.rate_per_second:
            raise NotionError(429, "rate_limited", "You have been rate limited. Please try "
                                                   "again in a few minutes.")  # fmt: skip
        hits.append(now)

    def _h(self, fn: Callable[..., Any]) -> Any:
        async def handle(request: Request) -> Response:
            try:
                workspace = self._workspace(request)
                raw = await request.body()
                if len(raw) > MAX_BODY:
                    raise NotionError(413, "payload_too_large", "Request body too large.")
                body: Any = {}
                if request.method in ("POST", "PATCH") and raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise NotionError(400, "invalid_json", "Error parsing JSON body.") from None
                    if not isinstance(body, dict):
                        raise NotionError(400, "validation_error", "body should be an object.")
                return JSONResponse(fn(request, workspace, body))
            except NotionError as err:
                headers = {"Retry-After": "1"} if err.status == 429 else None
                return self.error_response(
                    err.status, code=err.code, message=err.message, headers=headers
                )

        return handle

    def _database(self, workspace: Workspace, raw_id: str) -> dict[str, Any]:
        db = workspace.databases.get(_norm(raw_id))
        if db is None:
            raise NotionError(
                404, "object_not_found", f"Could not find database with ID: {_norm(raw_id)}. "
                "Make sure the relevant pages and databases are shared with your integration."
            )  # fmt: skip
        return db

    def _page(self, workspace: Workspace, raw_id: str) -> dict[str, Any]:
        page = workspace.pages.get(_norm(raw_id))
        if page is None:
            raise NotionError(404, "object_not_found",
                              f"Could not find page with ID: {_norm(raw_id)}.")  # fmt: skip
        return page

    # Handlers -------------------------------------------------------------------------

    def me(self, request: Request, workspace: Workspace, body: Any) -> dict[str, Any]:
        return {
            "object": "user", "id": workspace.bot_id, "type": "bot", "name": "Switchboard",
            "avatar_url": None,
            "bot": {"owner": {"type": "workspace", "workspace": True},
                    "workspace_name": "Sandbox workspace"},
        }  # fmt: skip

    def create_database(self, request: Request, workspace: Workspace, body: Any) -> Any:
        props = body.get("properties")
        if not isinstance(props, dict) or not props:
            raise NotionError(400, "validation_error", "body.properties should be defined.")
        title_items = body.get("title") or [{"text": {"content": "Untitled"}}]
        title = "".join(t["plain_text"] for t in _text(title_items, "body.title"))
        return workspace.database(str(uuid.uuid4()), title, props)

    def get_database(self, request: Request, workspace: Workspace, body: Any) -> Any:
        return self._database(workspace, request.path_params["id"])

    def query(self, request: Request, workspace: Workspace, body: Any) -> Any:
        db = self._database(workspace, request.path_params["id"])
        size = body.get("page_size", 100)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100:
            raise NotionError(400, "validation_error",
                              "body.page_size should be a number between 1 and 100.")  # fmt: skip
        rows = [p for p in workspace.pages.values()
                if p["parent"].get("database_id") == db["id"] and not p["archived"]]  # fmt: skip
        if body.get("filter") is not None:
            test = _filter(body["filter"], db["properties"], depth=0)
            rows = [p for p in rows if test(p)]
        for sort in reversed(_sorts(body.get("sorts"), db["properties"])):
            rows.sort(key=sort[0], reverse=sort[1])
        start = 0
        cursor = body.get("start_cursor")
        if cursor is not None:
            ids = [p["id"] for p in rows]
            try:
                start = ids.index(_norm(str(cursor)))
            except ValueError:
                raise NotionError(
                    400, "validation_error", "body.start_cursor should be a valid cursor."
                ) from None
        chunk = rows[start : start + size]
        more = start + size < len(rows)
        return {
            "object": "list", "results": chunk,
            "next_cursor": rows[start + size]["id"] if more else None, "has_more": more,
            "type": "page_or_database", "page_or_database": {},
        }  # fmt: skip

    def create_page(self, request: Request, workspace: Workspace, body: Any) -> Any:
        parent = body.get("parent")
        if not isinstance(parent, dict) or "database_id" not in parent:
            raise NotionError(400, "validation_error", "body.parent.database_id should be "
                                                       "defined.")  # fmt: skip
        db = self._database(workspace, str(parent["database_id"]))
        values = body.get("properties")
        if not isinstance(values, dict):
            raise NotionError(400, "validation_error", "body.properties should be an object.")
        now = _now()
        page_id = str(uuid.uuid4())
        properties: dict[str, Any] = {}
        for name, spec in db["properties"].items():
            empty: Any = [] if spec["type"] in ("title", "rich_text", "multi_select") else None
            if spec["type"] == "checkbox":
                empty = False
            properties[name] = {"id": spec["id"], "type": spec["type"], spec["type"]: empty}
        _apply(properties, values, db["properties"])
        page = {
            "object": "page", "id": page_id, "created_time": now, "last_edited_time": now,
            "created_by": {"object": "user", "id": workspace.bot_id},
            "last_edited_by": {"object": "user", "id": workspace.bot_id},
            "parent": {"type": "database_id", "database_id": db["id"]},
            "archived": False, "in_trash": False, "properties": properties,
            "url": f"https://www.notion.so/{page_id.replace('-', '')}",
        }  # fmt: skip
        children = body.get("children")
        if children is not None:
            workspace.children[page_id].extend(_blocks(children))
        workspace.pages[page_id] = page
        return page

    def page(self, request: Request, workspace: Workspace, body: Any) -> Any:
        page = self._page(workspace, request.path_params["id"])
        if request.method == "GET":
            return page
        db = workspace.databases[page["parent"]["database_id"]]
        values = body.get("properties", {})
        if not isinstance(values, dict):
            raise NotionError(400, "validation_error", "body.properties should be an object.")
        updated = json.loads(json.dumps(page["properties"]))
        _apply(updated, values, db["properties"])  # all or nothing
        page["properties"] = updated
        for flag in ("archived", "in_trash"):
            if isinstance(body.get(flag), bool):
                page["archived"] = page["in_trash"] = body[flag]
        page["last_edited_time"] = _now()
        return page

    def children(self, request: Request, workspace: Workspace, body: Any) -> Any:
        block_id = _norm(request.path_params["id"])
        if block_id not in workspace.pages and not any(
            b["id"] == block_id for blocks in workspace.children.values() for b in blocks
        ):
            raise NotionError(404, "object_not_found",
                              f"Could not find block with ID: {block_id}.")  # fmt: skip
        blocks = workspace.children[block_id]
        if request.method == "PATCH":
            added = _blocks(body.get("children"))
            blocks.extend(added)
            return {"object": "list", "results": added, "next_cursor": None,
                    "has_more": False, "type": "block", "block": {}}  # fmt: skip
        try:
            size = int(request.query_params.get("page_size", "100"))
        except ValueError:
            size = 0
        if not 1 <= size <= 100:
            raise NotionError(400, "validation_error",
                              "page_size should be a number between 1 and 100.")  # fmt: skip
        start = 0
        cursor = request.query_params.get("start_cursor")
        if cursor:
            ids = [b["id"] for b in blocks]
            try:
                start = ids.index(_norm(cursor))
            except ValueError:
                raise NotionError(
                    400, "validation_error", "start_cursor should be a valid cursor."
                ) from None
        chunk = blocks[start : start + size]
        more = start + size < len(blocks)
        return {"object": "list", "results": chunk,
                "next_cursor": blocks[start + size]["id"] if more else None,
                "has_more": more, "type": "block", "block": {}}  # fmt: skip


# Properties, filters, sorts, blocks --------------------------------------------------------


def _apply(properties: dict[str, Any], values: dict[str, Any], schema: dict[str, Any]) -> None:
    for name, value in values.items():
        spec = schema.get(name) or next((s for s in schema.values() if s["id"] == name), None)
        if spec is None:
            raise NotionError(400, "validation_error",
                              f"{name} is not a property that exists.")  # fmt: skip
        kind = spec["type"]
        if not isinstance(value, dict) or kind not in value:
            raise NotionError(
                400, "validation_error", f"{spec['name']} is expected to be {kind}."
            )  # fmt: skip
        raw = value[kind]
        where = f"body.properties.{spec['name']}.{kind}"
        stored: Any
        if kind in ("title", "rich_text"):
            stored = _text(raw, where)
        elif kind == "multi_select":
            if not isinstance(raw, list) or len(raw) > MAX_PROPERTY_ITEMS or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) and "," not in o["name"]
                and 0 < len(o["name"]) <= 100 for o in raw
            ):  # fmt: skip
                raise NotionError(
                    400,
                    "validation_error",
                    f"{where} should be a list of "
                    "options with names (no commas, at most 100 characters).",
                )
            stored = [{"id": hashlib.sha1(o["name"].encode()).hexdigest()[:8],  # noqa: S324
                       "name": o["name"], "color": "default"} for o in raw]  # fmt: skip
        elif kind == "select":
            if raw is not None and not (isinstance(raw, dict) and isinstance(raw.get("name"), str)):
                raise NotionError(400, "validation_error", f"{where} should be an option.")
            stored = None if raw is None else {"name": raw["name"], "color": "default"}
        elif kind in ("email", "url", "phone_number"):
            if raw is not None and (not isinstance(raw, str) or len(raw) > MAX_TEXT):
                raise NotionError(400, "validation_error", f"{where} should be a string.")
            stored = raw or None
        elif kind == "number":
            if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int | float)):
                raise NotionError(400, "validation_error", f"{where} should be a number.")
            stored = raw
        elif kind == "checkbox":
            if not isinstance(raw, bool):
                raise NotionError(400, "validation_error", f"{where} should be a boolean.")
            stored = raw
        else:  # date
            if raw is not None and not (
                isinstance(raw, dict) and isinstance(raw.get("start"), str)
            ):
                raise NotionError(400, "validation_error", f"{where} should be a date.")
            stored = raw
        properties[spec["name"]] = {"id": spec["id"], "type": kind, kind: stored}


_TEXT_CONDITIONS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": lambda v, x: v == x,
    "does_not_equal": lambda v, x: v != x,
    "contains": lambda v, x: isinstance(v, str) and str(x).lower() in v.lower(),
    "does_not_contain": lambda v, x: not (isinstance(v, str) and str(x).lower() in v.lower()),
    "starts_with": lambda v, x: isinstance(v, str) and v.lower().startswith(str(x).lower()),
    "ends_with": lambda v, x: isinstance(v, str) and v.lower().endswith(str(x).lower()),
    "is_empty": lambda v, x: v in (None, "", []),
    "is_not_empty": lambda v, x: v not in (None, "", []),
    "greater_than": lambda v, x: v is not None and v > x,
    "less_than": lambda v, x: v is not None and v < x,
}
_TIME_CONDITIONS: dict[str, Callable[[str, str], bool]] = {
    "after": lambda v, x: v > x,
    "before": lambda v, x: v < x,
    "on_or_after": lambda v, x: v >= x,
    "on_or_before": lambda v, x: v <= x,
    "equals": lambda v, x: v[:10] == x[:10],
}
Test = Callable[[dict[str, Any]], bool]


def _filter(spec: Any, schema: dict[str, Any], *, depth: int) -> Test:
    if not isinstance(spec, dict):
        raise NotionError(400, "validation_error", "body.filter should be an object.")
    for compound in ("and", "or"):
        if compound in spec:
            parts = spec[compound]
            if depth >= 2 or not isinstance(parts, list) or len(parts) > 100:
                raise NotionError(400, "validation_error", f"body.filter.{compound} should be a "
                                  "list, nested at most two levels deep.")  # fmt: skip
            tests = [_filter(p, schema, depth=depth + 1) for p in parts]
            if compound == "and":
                return lambda page: all(t(page) for t in tests)
            return lambda page: any(t(page) for t in tests)
    if "timestamp" in spec:
        field = spec["timestamp"]
        cond = spec.get(field)
        if (
            field not in ("created_time", "last_edited_time")
            or not isinstance(cond, dict)
            or len(cond) != 1
        ):
            raise NotionError(400, "validation_error", "body.filter.timestamp is not valid.")
        [(name, value)] = cond.items()
        when = _TIME_CONDITIONS.get(name)
        if when is None or not isinstance(value, str):
            raise NotionError(400, "validation_error", f"body.filter.{field}.{name} is not valid.")
        return lambda page: when(page[field], value)
    prop = spec.get("property")
    if not isinstance(prop, str):
        raise NotionError(400, "validation_error", "body.filter.property should be defined.")
    target = schema.get(prop) or next((s for s in schema.values() if s["id"] == prop), None)
    if target is None:
        raise NotionError(400, "validation_error",
                          f"Could not find property with name or id: {prop}")  # fmt: skip
    kind = target["type"]
    cond = spec.get(kind)
    if kind == "title" and cond is None:
        cond = spec.get("rich_text")
    if not isinstance(cond, dict) or len(cond) != 1:
        raise NotionError(
            400, "validation_error", f"body.filter.{kind} should be an object with one condition."
        )
    [(name, value)] = cond.items()
    check = _TEXT_CONDITIONS.get(name)
    if check is None:
        raise NotionError(400, "validation_error", f"body.filter.{kind}.{name} is not valid.")
    if kind == "multi_select" and name in ("contains", "does_not_contain"):
        inside = name == "contains"
        return lambda page: (value in (plain(page["properties"][target["name"]]) or [])) == inside
    return lambda page: check(plain(page["properties"][target["name"]]), value)


def _sorts(spec: Any, schema: dict[str, Any]) -> list[tuple[Callable[[Any], Any], bool]]:
    if spec is None:
        return []
    if not isinstance(spec, list) or len(spec) > 10:
        raise NotionError(400, "validation_error", "body.sorts should be a list.")
    out = []
    for item in spec:
        if not isinstance(item, dict) or item.get("direction") not in ("ascending", "descending"):
            raise NotionError(400, "validation_error", "body.sorts[].direction should be "
                              "`ascending` or `descending`.")  # fmt: skip
        reverse = item["direction"] == "descending"
        if "timestamp" in item:
            field = item["timestamp"]
            if field not in ("created_time", "last_edited_time"):
                raise NotionError(400, "validation_error", "body.sorts[].timestamp is not valid.")
            out.append(((lambda f: lambda p: p[f])(field), reverse))
            continue
        name = item.get("property")
        spec_ = schema.get(name) if isinstance(name, str) else None
        if spec_ is None:
            raise NotionError(
                400, "validation_error", f"Could not find sort property with name or id: {name}"
            )
        out.append(((lambda n: lambda p: _sort_key(plain(p["properties"][n])))(name), reverse))
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None or value == "" or value == []:
        return (1, "")  # empty values last
    if isinstance(value, list):
        return (0, ",".join(str(v) for v in value).lower())
    if isinstance(value, str):
        return (0, value.lower())
    return (0, value)


def _blocks(children: Any) -> list[dict[str, Any]]:
    if not isinstance(children, list) or len(children) > MAX_BLOCKS:
        raise NotionError(
            400,
            "validation_error",
            f"body.children should be a list of at most {MAX_BLOCKS} blocks.",
        )
    out: list[dict[str, Any]] = []
    for block in children:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind is None and isinstance(block, dict):
            kind = next((k for k in block if k != "object"), None)
        content = block.get(kind) if isinstance(block, dict) and kind else None
        if not isinstance(content, dict) or not isinstance(kind, str):
            raise NotionError(400, "validation_error", "body.children[] should be blocks.")
        now = _now()
        out.append({
            "object": "block", "id": str(uuid.uuid4()), "type": kind,
            "created_time": now, "last_edited_time": now, "has_children": False,
            "archived": False, "in_trash": False,
            kind: {**content, "rich_text": _text(content.get("rich_text", []),
                                                 f"body.children[].{kind}.rich_text")},
        })  # fmt: skip
    return out


def create_app() -> NotionSandbox:
    return NotionSandbox()
