"""Strawberry's extension runner, with each phase's hooks found once per class.

Strawberry builds four context managers per operation (operation, parsing, validation,
execution) and for each one inspects every extension's class again (`getattr`, generator
checks, `contextlib.contextmanager` around a new bound method, an exit stack): for a
cheap request that is a fifth of the gateway's own work. The hooks a class defines do not
change, so `LeanExtensionsRunner` looks them up once per (class, phase) and runs plain
generator hooks directly, with the same order and exception semantics as strawberry's
exit stack (entered in order, left in reverse; an exception is thrown into each hook,
which may handle it). A phase whose hooks are not all plain generator functions (an
async generator, a plain callable) is left to strawberry's own manager.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner

Hook = Callable[[SchemaExtension], Generator[Any, None, None]]

# (extension class, hook name) -> its generator hook; None when it defines none; False
# when it defines one strawberry must run.
_hooks: dict[tuple[type, str], Hook | bool | None] = {}


def _hook(cls: type, name: str) -> Hook | bool | None:
    key = (cls, name)
    found = _hooks.get(key)
    if found is None and key not in _hooks:
        fn = getattr(cls, name)
        if fn is getattr(SchemaExtension, name):
            found = None
        elif inspect.isgeneratorfunction(fn):
            found = fn
        else:
            found = False
        _hooks[key] = found
    return found


class _Phase:
    """One phase's hooks, as a sync and async context manager."""

    __slots__ = ("entered", "hooks")

    def __init__(self, hooks: list[tuple[Hook, SchemaExtension]]) -> None:
        self.hooks = hooks
        self.entered: list[Generator[Any, None, None]] = []

    def __enter__(self) -> None:
        for hook, extension in self.hooks:
            generator = hook(extension)
            try:
                next(generator)
            except StopIteration:
                raise RuntimeError("generator didn't yield") from None
            self.entered.append(generator)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        pending = exc
        while self.entered:
            generator = self.entered.pop()
            try:
                if pending is None:
                    next(generator)
                else:
                    generator.throw(pending)
            except StopIteration:
                pending = None  # finished; a thrown exception it caught is handled
                continue
            except BaseException as raised:
                if raised is not pending:
                    raised.__context__ = pending
                pending = raised
                continue
            raise RuntimeError("generator didn't stop")
        if pending is None:
            return exc is not None  # every hook that saw it handled it
        if pending is exc:
            return False
        raise pending

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self.__exit__(exc_type, exc, tb)


class LeanExtensionsRunner(SchemaExtensionsRunner):
    def _phase(self, name: str, fallback: Callable[[], Any]) -> Any:
        hooks: list[tuple[Hook, SchemaExtension]] = []
        for extension in self.extensions:
            hook = _hook(type(extension), name)
            if hook is False:
                return fallback()
            if hook is not None:
                hooks.append((hook, extension))  # type: ignore[arg-type]
        return _Phase(hooks)

    def operation(self) -> Any:
        return self._phase("on_operation", super().operation)

    def validation(self) -> Any:
        return self._phase("on_validate", super().validation)

    def parsing(self) -> Any:
        return self._phase("on_parse", super().parsing)

    def executing(self) -> Any:
        return self._phase("on_execute", super().executing)
