"""YAML text -> plain Python values plus the line each field was written on.

`yaml.safe_load` throws positions away, so we compose the node tree ourselves and build the
values while walking it, recording `path -> line` for every mapping key and sequence item.
Walking by hand also lets us refuse what safe_load silently accepts: a key written twice (the
second would quietly win) and alias bombs (a plain file of any size is fine; only values
reached again through aliases are counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policies.errors import FieldPath

MAX_ALIAS_NODES = 100_000      # values reached again through aliases
COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml: ~10x faster, same marks
MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlSyntaxError(Exception):
    """The text is not YAML; `line` is 1-based where the parser knew it."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class YamlDoc:
    value: Any
    lines: dict[FieldPath, int] = field(default_factory=dict)
    problems: list[tuple[FieldPath, str]] = field(default_factory=list)

    def line_for(self, path: FieldPath) -> int | None:
        """The line of `path`, or of its nearest written ancestor (defaults are not written)."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line is not None:
                return line
        return None


def parse_yaml(text: str) -> YamlDoc:
    try:
        root = yaml.compose(text, Loader=COMPOSER)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = ": ".join(p for p in (err.context, err.problem) if p)
        raise YamlSyntaxError(f"YAML syntax error: {what}", mark.line + 1 if mark else None)
    except yaml.YAMLError as err:
        raise YamlSyntaxError(f"YAML syntax error: {err}", None)
    doc = YamlDoc(value=None, lines={(): 1})
    if root is not None:
        doc.lines[()] = root.start_mark.line + 1
        doc.value = _Walker(doc).value(root, ())
    return doc


class _Walker:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.constructor = SafeConstructor()
        self.on_stack: set[int] = set()
        self.seen: set[int] = set()
        self.reused = 0

    def value(self, node: Node, path: FieldPath) -> Any:
        if id(node) in self.seen:
            self.reused += 1
            if self.reused > MAX_ALIAS_NODES:
                raise YamlSyntaxError(f"aliases expand to more than {MAX_ALIAS_NODES} values "
                                      "(alias bomb?)", node.start_mark.line + 1)
        self.seen.add(id(node))
        if id(node) in self.on_stack:
            self.doc.problems.append((path, "recursive alias"))
            return None
        self.on_stack.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
            if isinstance(node, SequenceNode):
                return [self.item(child, path + (i,)) for i, child in enumerate(node.value)]
            assert isinstance(node, ScalarNode)
            return self.constructor.construct_object(node, deep=True)
        except ConstructorError as err:
            self.doc.problems.append((path, str(err.problem or err)))
            return None
        finally:
            self.on_stack.discard(id(node))

    def item(self, node: Node, path: FieldPath) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        return self.value(node, path)

    def mapping(self, node: MappingNode, path: FieldPath) -> dict[Any, Any]:
        """Merges (`<<`) first, so explicit keys override them; only explicit repeats clash."""
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in reversed(sources):
                    merged = self.value(source, path)
                    if isinstance(merged, dict):
                        result.update(merged)
                    else:
                        self.doc.problems.append((path, "a merge (<<) takes a mapping or a "
                                                        "list of mappings"))
        explicit: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.value(key_node, path + ("<key>",))
            try:
                hash(key)
            except TypeError:
                self.doc.problems.append((path, f"a key must be a plain value, got {key!r}"))
                continue
            here = path + (key,)
            if key in explicit:
                first = self.doc.lines.get(here)
                self.doc.problems.append((here, f"key {key!r} is written twice (first on line "
                                                f"{first}); the second would silently win"))
            explicit.add(key)
            self.doc.lines[here] = key_node.start_mark.line + 1
            result[key] = self.value(value_node, here)
        return result
