"""Compatibility of two JSON Schemas of the same event and major version.

Inside a major version the only allowed change is adding an optional property, at the top or
inside a nested object. Anything else can break a subscriber or make a replayed old event invalid,
so it is reported, and the change must become a new major version (a new type and topic).
Titles, descriptions and other annotations may change freely.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

# Keywords that decide what is valid. Loosening one breaks consumers that relied on it (a longer
# string, a new enum member), tightening one rejects events already on the topic, so any change
# to them counts.
_CONSTRAINTS = (
    "type",
    "pattern",
    "enum",
    "const",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
)
_COMBINATORS = ("anyOf", "oneOf", "allOf")


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Human-readable breaks from `old` to `new`; an empty list means compatible."""
    problems = [
        f"$defs/{name}: removed"
        for name in old.get("$defs", {})
        if name not in new.get("$defs", {})
    ]
    _Comparison(old, new, problems).compare(old, new, "$")
    return problems


class _Comparison:
    def __init__(self, old_root: Schema, new_root: Schema, problems: list[str]) -> None:
        self.old_root, self.new_root, self.problems = old_root, new_root, problems
        self.seen: set[tuple[int, int]] = set()  # pairs already compared: recursive $defs end

    def compare(self, old: Schema, new: Schema, path: str) -> None:
        old_node, new_node = _resolve(old, self.old_root), _resolve(new, self.new_root)
        if old_node is None or new_node is None:
            self.problems.append(
                f"{path}: $ref does not resolve ({old.get('$ref') or new.get('$ref')})"
            )
            return
        if (id(old_node), id(new_node)) in self.seen:
            return
        self.seen.add((id(old_node), id(new_node)))
        for keyword in _CONSTRAINTS:
            if old_node.get(keyword) != new_node.get(keyword):
                self.problems.append(
                    f"{path}: {keyword} changed from {old_node.get(keyword)!r} "
                    f"to {new_node.get(keyword)!r}"
                )
        self._additional_properties(old_node, new_node, path)
        self._properties(old_node, new_node, path)
        self._subschemas(old_node, new_node, path)

    def _additional_properties(self, old: Schema, new: Schema, path: str) -> None:
        # Absent means "anything allowed", i.e. true.
        before, after = old.get("additionalProperties", True), new.get("additionalProperties", True)
        if isinstance(before, dict) and isinstance(after, dict):
            self.compare(before, after, f"{path}.*")
        elif before != after:
            self.problems.append(f"{path}: additionalProperties changed from {before} to {after}")

    def _properties(self, old: Schema, new: Schema, path: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        for name, schema in old_props.items():
            where = f"{path}.{name}"
            if name not in new_props:
                self.problems.append(f"{where}: property removed")
                continue
            if name not in old_required and name in new_required:
                self.problems.append(f"{where}: optional property became required")
            if name in old_required and name not in new_required:
                # Subscribers may rely on a required field being present.
                self.problems.append(f"{where}: required property became optional")
            self.compare(schema, new_props[name], where)
        for name in new_props.keys() - old_props.keys():
            if name in new_required:
                self.problems.append(f"{path}.{name}: new required property")

    def _subschemas(self, old: Schema, new: Schema, path: str) -> None:
        if "items" in old or "items" in new:
            if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
                self.compare(old["items"], new["items"], f"{path}[]")
            else:
                self.problems.append(f"{path}: items changed")
        for keyword in _COMBINATORS:
            before, after = old.get(keyword), new.get(keyword)
            if before is None and after is None:
                continue
            if before is None or after is None or len(before) != len(after):
                self.problems.append(f"{path}: {keyword} changed")
                continue
            for index, (left, right) in enumerate(zip(before, after, strict=True)):
                self.compare(left, right, f"{path}.{keyword}[{index}]")


def _resolve(node: Schema, root: Schema) -> Schema | None:
    """Follow a local `$ref` such as `#/$defs/ReportLine`; None if it points nowhere."""
    ref = node.get("$ref")
    if ref is None:
        return node
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(target, dict) or part not in target:
            return None
        target = target[part]
    return target if isinstance(target, dict) else None
