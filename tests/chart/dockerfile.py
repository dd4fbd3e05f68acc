"""A small reader of Dockerfiles, enough for the checks in test_image.py.

It follows the Dockerfile reference for what the checks need: parser directives
and comments, lines continued with a backslash (comment lines inside a
continuation are dropped), instructions case-insensitive, JSON (exec) form or
shell form, `ARG`s before the first `FROM` as defaults for `${NAME}` in `FROM`,
and stages (`FROM image AS name`). Heredocs and `ESCAPE` other than backslash
are refused rather than misread.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    text: str  # the arguments, continuation lines joined with a space
    line: int  # 1-based line of the keyword

    @property
    def exec_form(self) -> list[str] | None:
        """The arguments if written as a JSON array (exec form), else None."""
        if not self.text.startswith("["):
            return None
        parsed = json.loads(self.text)
        assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
        return parsed

    def flags(self) -> dict[str, str]:
        """`--name=value` flags before the arguments (COPY --from=build ...)."""
        out: dict[str, str] = {}
        for word in shlex.split(self.text):
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out

    def words(self) -> list[str]:
        """Shell-form arguments without the leading flags."""
        words = shlex.split(self.text)
        return [w for w in words if not w.startswith("--")] if words else []


@dataclass
class Stage:
    base: str  # the image, with pre-FROM ARG defaults substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    directives: dict[str, str]
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        (found,) = [s for s in self.stages if s.name == name]
        return found


_DIRECTIVE = re.compile(r"^#\s*(?P<name>[a-zA-Z]+)\s*=\s*(?P<value>.*?)\s*$")


def parse(path: Path) -> Dockerfile:
    lines = path.read_text().splitlines()
    directives: dict[str, str] = {}
    index = 0
    while index < len(lines) and (found := _DIRECTIVE.match(lines[index])):
        directives[found["name"].lower()] = found["value"]
        index += 1
    if directives.get("escape", "\\") != "\\":
        raise ValueError("only the backslash escape character is supported")

    instructions: list[Instruction] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(lines[index:], start=index + 1):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continuation is not part of it
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        keyword, _, text = " ".join(p for p in current if p).partition(" ")
        if "<<" in text and re.search(r"<<-?['\"]?[A-Za-z]", text):
            raise ValueError(f"line {start}: heredocs are not supported here")
        instructions.append(Instruction(keyword.upper(), text.strip(), start))
        current = []
    if current:
        raise ValueError("the file ends inside a continued line")

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.words()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m[1], m[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(base, name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {instruction.line}: only ARG may come before FROM")
            name, _, default = instruction.text.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(directives, global_args, stages)
