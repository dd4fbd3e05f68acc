"""How `canaryctl --help` names values: `PATH...`, `[NAME]`, `--database URL`.

Typer's own help writes a parameter's Python type after its name (`<bool>`,
`<list[Path]>`, `<str>`) and braces around required arguments (`{paths}`),
which no other command line tool does. `HelpGroup` keeps the conventional form
instead: an argument is its metavar in capitals (`...` when it takes several,
`[...]` when it is optional), an option shows its metavar (`URL`, `[text|json]`)
and a flag shows nothing. Every command of a group made with `cls=HelpGroup`
gets it, sub-groups included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption

# typer's parameter classes are untyped for mypy in places; the overrides keep their signatures.


class _Argument(TyperArgument):
    def _name(self) -> str:
        name = (self.metavar or self.name or "").upper()
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return name

    def _rich_display_name(self) -> str:
        return self._name()

    def _usage_display_name(self) -> str:
        return self._name() if self.required else f"[{self._name()}]"

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        return self.metavar or (self.name or "value").upper()


def _conventional(command: Any) -> None:
    for param in getattr(command, "params", ()):
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        elif type(param) is TyperOption:
            param.__class__ = _Option


class HelpGroup(TyperGroup):
    """A typer group whose commands' help uses conventional metavars."""

    def __init__(
        self,
        *,
        commands: Mapping[str, Any] | Sequence[Any] | None = None,
        **attrs: Any,
    ) -> None:
        super().__init__(commands=commands, **attrs)  # type: ignore[arg-type]
        _conventional(self)
        for command in self.commands.values():
            _conventional(command)
