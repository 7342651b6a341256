"""The API's schema, declared once: each node renders its part of a CRD's openAPIV3Schema and
reads untrusted input into checked values with the model's messages.

A node says what the schema says (description, type, bounds, pattern, enum, default, required
fields, list sizes and types) and the API server's CEL rules (`Rule`), each beside its Python
check. What a schema cannot say is hand-written and hooked in: `parse` (RE2, IP addresses, a
header name's lower case), `read` (a reader of its own), `build` (the model dataclass, from the
checked values of an object). Readers are compiled once into closures: validation runs for every
object on every change.

How a node reads, as the API server checks (so the model refuses what the CRD refuses):
- a field that is absent or null takes its default (`required` ones are an error); a value that
  is refused becomes the default too, so that one pass goes on and reports every problem;
- an object's rules see the object as written, before its fields (CEL sees the whole object);
  a list's rules see the items read, a scalar's rules the value read;
- list items are required (null is an error) and unusable ones are dropped.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .durations import DURATION_PATTERN, format_duration_ms
from .fields import Fields, is_utf8
from .limits import utf8_size

Reader = Callable[[Fields, Any, str], Any]
# A reader of valid input only (see Node.fast_reader): value -> checked value, or raises Refused.
FastReader = Callable[[Any], Any]
_MISSING: Any = object()
# What the model reads of a string that the schema leaves unbounded (an enum's value).
_STRING_GUARD = 1024
_INT64 = 2**63


class Refused(Exception):
    """A fast reader met something it does not accept: the full reader says what (and where)."""


_REFUSED = Refused()  # raised as is: no traceback is kept, and none is built


@dataclass(frozen=True)
class Rule:
    """An x-kubernetes-validations rule and the model's check of the same constraint: `check`
    returns the model's message when the value breaks it (None when it holds). No check: the
    node's own reading already enforces it (a byte limit, an IP address)."""

    cel: str
    message: str
    field_path: str = ""
    check: Callable[[Any], str | None] | None = None

    def openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class Node:
    """What every node has: a description, a default (YAML, as the CRD states it) and rules."""

    # The model's message for a required field that is absent, or a list item that is null.
    required_message = "is required"

    def __init__(self, description: str, *, default: Any = _MISSING, rules: Sequence[Rule] = ()) -> None:
        self.description = " ".join(description.split())
        self.default = default
        self.rules = tuple(rules)

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    def openapi(self) -> dict[str, Any]:
        """This node as a structural OpenAPI v3 schema."""
        out = self._openapi()
        if self.default is not _MISSING:
            out["default"] = self.default
        if self.rules:
            out["x-kubernetes-validations"] = [rule.openapi() for rule in self.rules]
        return out

    def _openapi(self) -> dict[str, Any]:
        raise NotImplementedError

    def reader(self, *, item: bool = False) -> Reader:
        """A function (fields, value, path) -> checked value, or None (with errors recorded).
        `value` is never None: absent fields are the enclosing object's business."""
        read = self._reader(item=item)
        checks = [(rule.field_path, rule.check) for rule in self.rules if rule.check is not None]
        if not checks:
            return read

        def read_and_check(f: Fields, value: Any, path: str) -> Any:
            checked = read(f, value, path)
            if checked is not None:
                for field_path, check in checks:
                    if (message := check(checked)) is not None:
                        f.error(path + field_path, message)
                        return None
            return checked
        return read_and_check

    def _reader(self, *, item: bool) -> Reader:
        raise NotImplementedError

    def fast_reader(self, *, item: bool = False) -> FastReader:
        """A reader of valid input only, for the common case (every object on every change is
        validated): it returns what `reader()` returns for a value that `reader()` reads without
        any error, and raises Refused for anything else, with no paths and no messages made, so
        that `reader()` runs then and reports the problems. A node without a fast reader of its
        own runs its full reader with errors collected aside."""
        fast = self._fast_reader(item=item)
        checks = [rule.check for rule in self.rules if rule.check is not None]
        if not checks:
            return fast

        def read_and_check(value: Any) -> Any:
            checked = fast(value)
            for check in checks:
                if check(checked) is not None:
                    raise _REFUSED
            return checked
        return read_and_check

    def _fast_reader(self, *, item: bool) -> FastReader:
        return _full_reader_aside(self._reader(item=item))

    def parsed_default(self) -> Any:
        """The default as the model holds it (the YAML default read by this node), or None."""
        if self.default is _MISSING:
            return None
        f = Fields()
        value = self.reader()(f, self.default, "default")
        assert not f.errors, f.errors  # a default the model refuses would be refused by the API server too
        return value


class String(Node):
    def __init__(self, description: str, *, min_length: int = 0, max_length: int | None = None,
                 pattern: re.Pattern[str] | None = None, what: str = "", pattern_message: str | None = None,
                 max_bytes: int | None = None, as_sent: Callable[[str], str] | None = None, as_sent_note: str = "",
                 parse: Callable[[Fields, str, str], Any] | None = None,
                 read: Reader | None = None, format: str | None = None, **kw: Any) -> None:
        """`max_length` counts characters, as the CRD's maxLength; `max_bytes` is Envoy's limit, in
        UTF-8 bytes of the text as sent (`as_sent`), which the CRD cannot state; `what` names a
        valid value in the message for a pattern; `parse` checks and converts what passed the
        schema's checks, by hand; `read` replaces the reader (only the CRD uses the bounds)."""
        super().__init__(description, **kw)
        self.min_length, self.max_length, self.pattern = min_length, max_length, pattern
        self.what, self.pattern_message = what, pattern_message
        self.max_bytes, self.as_sent, self.as_sent_note = max_bytes, as_sent, as_sent_note
        self.parse, self.read, self.format = parse, read, format

    def _openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.format:
            out["format"] = self.format
        out["description"] = self.description
        if self.min_length:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.pattern is not None:
            out["pattern"] = self.pattern.pattern
        return out

    def _reader(self, *, item: bool) -> Reader:
        if self.read is not None:
            return self.read
        parse, required, max_len = self.parse, self.min_length > 0, self.max_length or _STRING_GUARD
        pattern, what, pattern_message = self.pattern, self.what, self.pattern_message
        max_bytes, as_sent, as_sent_note = self.max_bytes, self.as_sent, self.as_sent_note

        def read(f: Fields, value: Any, path: str) -> Any:
            text = f.string(value, path, required=required, max_len=max_len, pattern=pattern, what=what,
                            pattern_message=pattern_message, max_bytes=max_bytes, as_sent=as_sent,
                            as_sent_note=as_sent_note)
            return text if text is None or parse is None else parse(f, text, path)
        return read

    def _fast_reader(self, *, item: bool) -> FastReader:
        if self.read is not None:
            return _full_reader_aside(self.read)
        parse, required, max_len = self.parse, self.min_length > 0, self.max_length or _STRING_GUARD
        fullmatch = self.pattern.fullmatch if self.pattern is not None else None
        max_bytes, as_sent = self.max_bytes, self.as_sent
        parse_aside = _full_reader_aside(parse) if parse is not None else None

        def read(value: Any) -> Any:
            # Fields.string's checks, in its order, on the way to the value it would return.
            if type(value) is not str or (required and not value) or len(value) > max_len:
                raise _REFUSED
            if not value.isascii() and not is_utf8(value):
                raise _REFUSED
            if max_bytes is not None:
                sent = as_sent(value) if as_sent is not None else value
                if utf8_size(sent) > max_bytes:
                    raise _REFUSED
            if fullmatch is not None and not fullmatch(value):
                raise _REFUSED
            return value if parse_aside is None else parse_aside(value)
        return read


class Enum(Node):
    """A string out of `choices`."""

    def __init__(self, description: str, choices: Sequence[str], **kw: Any) -> None:
        super().__init__(description, **kw)
        self.choices = tuple(choices)

    def _openapi(self) -> dict[str, Any]:
        return {"type": "string", "description": self.description, "enum": list(self.choices)}

    def _reader(self, *, item: bool) -> Reader:
        enum, choices = Fields.enum, self.choices
        return lambda f, value, path: enum(f, value, path, choices, required=item)

    def _fast_reader(self, *, item: bool) -> FastReader:
        # The choices are non-empty text: a value among them passes every check of Fields.string.
        choices = frozenset(self.choices)

        def read(value: Any) -> Any:
            if type(value) is not str or value not in choices:
                raise _REFUSED
            return value
        return read


class Integer(Node):
    def __init__(self, description: str, *, minimum: int | None = None, maximum: int | None = None,
                 choices: Sequence[int] = (), format: str | None = None, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.minimum, self.maximum, self.choices, self.format = minimum, maximum, tuple(choices), format

    def _openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.format:
            out["format"] = self.format
        out["description"] = self.description
        if self.choices:
            out["enum"] = list(self.choices)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out

    def _reader(self, *, item: bool) -> Reader:
        integer = Fields.integer
        low = -_INT64 if self.minimum is None else self.minimum
        high = _INT64 if self.maximum is None else self.maximum
        if not self.choices:
            return lambda f, value, path: integer(f, value, path, minimum=low, maximum=high)
        choices = self.choices
        listed = ", ".join(map(str, choices))

        def read(f: Fields, value: Any, path: str) -> int | None:
            # An integer first: 301.0 or True must not pass for 301.
            number = integer(f, value, path, minimum=low, maximum=high)
            if number is not None and number not in choices:
                f.error(path, f"{number!r} is not one of: {listed}")
                return None
            return number
        return read

    def _fast_reader(self, *, item: bool) -> FastReader:
        low = -_INT64 if self.minimum is None else self.minimum
        high = _INT64 if self.maximum is None else self.maximum
        choices = frozenset(self.choices)

        def read(value: Any) -> int:
            # type() is int: a bool is not an integer here, as in Fields.integer.
            if type(value) is not int or not low <= value <= high or (choices and value not in choices):
                raise _REFUSED
            return value
        return read


class Duration(Node):
    """A duration in the Gateway API format (500ms, 1m30s), read as milliseconds, within bounds.
    The CRD checks the format with a pattern and the bounds with a CEL rule guarded by it, so that
    a malformed value gets one clear error rather than a CEL evaluation error."""

    def __init__(self, description: str, *, minimum_ms: int = 0, maximum_ms: int = 24 * 3_600_000,
                 **kw: Any) -> None:
        self.minimum_ms, self.maximum_ms = minimum_ms, maximum_ms
        low, high = format_duration_ms(minimum_ms), format_duration_ms(maximum_ms)
        guard = f"!self.matches('{DURATION_PATTERN}')"
        if minimum_ms:
            rule = Rule(f"{guard} || (duration(self) >= duration('{low}') && duration(self) <= duration('{high}'))",
                        f"must be between {low} and {high}")
        else:
            rule = Rule(f"{guard} || duration(self) <= duration('{high}')", f"must be at most {high}")
        super().__init__(description, rules=[rule], **kw)

    def _openapi(self) -> dict[str, Any]:
        # 4 parts of 5 digits and a unit: the longest duration there is.
        return {"type": "string", "description": self.description, "maxLength": 28, "pattern": DURATION_PATTERN}

    def _reader(self, *, item: bool) -> Reader:
        duration, low, high = Fields.duration, self.minimum_ms, self.maximum_ms
        return lambda f, value, path: duration(f, value, path, minimum_ms=low, maximum_ms=high)


class IntOrString(Node):
    """A number read by `integer` or a name read by `string` (x-kubernetes-int-or-string)."""

    def __init__(self, description: str, *, integer: Integer, string: String, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.integer, self.string = integer, string

    def _openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
                               "description": self.description}
        for part in (self.integer._openapi(), self.string._openapi()):
            out |= {k: v for k, v in part.items() if k not in ("type", "description")}
        return out

    def _reader(self, *, item: bool) -> Reader:
        read_integer, read_string = self.integer.reader(), self.string.reader()
        return lambda f, value, path: (read_string if isinstance(value, str) else read_integer)(f, value, path)

    def _fast_reader(self, *, item: bool) -> FastReader:
        read_integer, read_string = self.integer.fast_reader(), self.string.fast_reader()
        return lambda value: (read_string if isinstance(value, str) else read_integer)(value)


class List(Node):
    def __init__(self, description: str, items: Node, *, max_items: int, min_items: int = 0,
                 too_few: str = "", list_type: str | None = None, map_key: str | None = None,
                 duplicate: str = "", **kw: Any) -> None:
        """`too_few` is the model's message for fewer than `min_items`; `duplicate` its message
        for an item twice in a set, or a `map_key` twice in a map (the key is the same-named
        attribute of the items read)."""
        super().__init__(description, **kw)
        self.items, self.max_items, self.min_items, self.too_few = items, max_items, min_items, too_few
        self.list_type, self.map_key, self.duplicate = list_type, map_key, duplicate
        if min_items:
            self.required_message = too_few

    def _openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "description": self.description}
        if self.min_items:
            out["minItems"] = self.min_items
        out["maxItems"] = self.max_items
        if self.list_type:
            out["x-kubernetes-list-type"] = self.list_type
        if self.map_key:
            out["x-kubernetes-list-map-keys"] = [self.map_key]
        return out

    def openapi(self) -> dict[str, Any]:
        return super().openapi() | {"items": self.items.openapi()}

    def _reader(self, *, item: bool) -> Reader:
        read_item, null = self.items.reader(item=True), self.items.required_message
        sequence, max_items, min_items, too_few = Fields.sequence, self.max_items, self.min_items, self.too_few
        checks = [(rule.field_path, rule.check) for rule in self.rules if rule.check is not None]
        key = operator.attrgetter(self.map_key) if self.map_key else None
        duplicate = self.duplicate if self.list_type else ""

        def read(f: Fields, value: Any, path: str) -> tuple[Any, ...]:
            out = []
            for i, entry in enumerate(sequence(f, value, path, max_items=max_items)):
                if entry is None:
                    f.error(f"{path}[{i}]", null)
                elif (checked := read_item(f, entry, f"{path}[{i}]")) is not None:
                    out.append(checked)
            if min_items and isinstance(value, list) and len(value) < min_items:
                f.error(path, too_few)
            if out:
                items = tuple(out)
                for field_path, check in checks:
                    if (message := check(items)) is not None:
                        f.error(path + field_path, message)
                if duplicate:
                    keys = [key(i) for i in items] if key is not None else out
                    if len(set(keys)) != len(keys):
                        f.error(path, duplicate)
            return tuple(out)
        return read

    def _fast_reader(self, *, item: bool) -> FastReader:
        read_item = self.items.fast_reader(item=True)
        max_items, min_items = self.max_items, self.min_items
        checks = [rule.check for rule in self.rules if rule.check is not None]
        key = operator.attrgetter(self.map_key) if self.map_key else None
        duplicate = bool(self.duplicate and self.list_type)

        def read(value: Any) -> tuple[Any, ...]:
            if type(value) is not list or len(value) > max_items or len(value) < min_items:
                raise _REFUSED
            if not value:
                return ()
            out = []
            for entry in value:
                # A null item is an error; an item read as None is dropped by the full reader,
                # which then says why.
                if entry is None or (checked := read_item(entry)) is None:
                    raise _REFUSED
                out.append(checked)
            items = tuple(out)
            for check in checks:
                if check(items) is not None:
                    raise _REFUSED
            if duplicate:
                keys = [key(i) for i in items] if key is not None else out
                if len(set(keys)) != len(keys):
                    raise _REFUSED
            return items
        return read

    def parsed_default(self) -> Any:
        return () if self.default is _MISSING else super().parsed_default()

    def reader(self, *, item: bool = False) -> Reader:
        # The list's rules see the items read, and are checked in _reader, before duplicates.
        return self._reader(item=item)

    def fast_reader(self, *, item: bool = False) -> FastReader:
        return self._fast_reader(item=item)


@dataclass(frozen=True)
class Variant:
    """Fields that read differently when the object's discriminator has one of `when`."""

    when: tuple[str, ...]
    properties: Mapping[str, Node]


class Object(Node):
    def __init__(self, description: str, properties: Mapping[str, Node], *, required: Sequence[str] = (),
                 build: Callable[[dict[str, Any]], Any] | None = None, null_message: str = "must be an object",
                 discriminator: str = "", variants: Sequence[Variant] = (), **kw: Any) -> None:
        """`build` makes the model's value of the checked fields (by name), or None when one it
        needs is unusable; `null_message` is the model's message for a null list item; with a
        `discriminator` (an Enum field read before them) the `variants` fields replace the
        plain ones for its values (the CRD says it as anyOf)."""
        super().__init__(description, **kw)
        self.properties, self.required, self.build = dict(properties), tuple(required), build
        self.required_message = null_message
        self.discriminator, self.variants = discriminator, tuple(variants)

    def _openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "description": self.description}
        if self.required:
            out["required"] = list(self.required)
        if self.variants:
            out["anyOf"] = [self._branch(v) for v in self.variants]
        return out

    def _branch(self, variant: Variant) -> dict[str, Any]:
        """A variant as an anyOf branch: the discriminator's values and, per field, what the
        variant adds to the plain field (structural schemas allow only value checks there)."""
        branch: dict[str, Any] = {}
        default = self.properties[self.discriminator].default
        if default not in variant.when:
            branch["required"] = [self.discriminator]
        properties: dict[str, Any] = {self.discriminator: {"enum": list(variant.when)}}
        for name, node in variant.properties.items():
            plain = self.properties[name]._openapi()
            extra = {k: v for k, v in node._openapi().items() if plain.get(k) != v and k != "description"}
            if extra:
                properties[name] = extra
        branch["properties"] = properties
        return branch

    def openapi(self) -> dict[str, Any]:
        out = super().openapi()
        out["properties"] = {name: node.openapi() for name, node in self.properties.items()}
        return out

    def _reader(self, *, item: bool) -> Reader:
        names = frozenset(self.properties)
        fields = [(name, node.reader(), node.parsed_default(), name in self.required, node.required_message)
                  for name, node in self.properties.items()]
        rules = [(rule.field_path, rule.check) for rule in self.rules if rule.check is not None]
        build = self.build or dict
        discriminator = self.discriminator
        by_choice = {choice: {name: node.reader() for name, node in variant.properties.items()}
                     for variant in self.variants for choice in variant.when}
        order = list(self.properties)
        assert all(order.index(discriminator) < order.index(name) for v in self.variants for name in v.properties), \
            "the discriminator is read before the fields that depend on it"

        def read(f: Fields, value: Any, path: str) -> Any:
            raw = f.mapping(value, path, names)
            if raw is None:
                return None
            for field_path, check in rules:
                if (message := check(raw)) is not None:
                    f.error(path + field_path, message)
            values: dict[str, Any] = {}
            variant: Mapping[str, Reader] = {}
            for name, read_field, default, required, required_message in fields:
                given = raw.get(name)
                if given is None:
                    if required:
                        f.error(f"{path}.{name}", required_message)
                    values[name] = default
                else:
                    checked = variant.get(name, read_field)(f, given, f"{path}.{name}")
                    values[name] = default if checked is None else checked
                if name == discriminator:
                    variant = by_choice.get(values[name], {})
            return build(values)
        return read

    def _fast_reader(self, *, item: bool) -> FastReader:
        # Only the fields given are read (the rest take their defaults, copied at once): a Route's
        # rule declares ten fields and usually gives two or three.
        names = frozenset(self.properties)
        required = frozenset(self.required)
        readers = {name: node.fast_reader() for name, node in self.properties.items()}
        defaults = {name: node.parsed_default() for name, node in self.properties.items()}
        order = list(self.properties)
        rules = [rule.check for rule in self.rules if rule.check is not None]
        build = self.build
        discriminator = self.discriminator
        by_choice = {choice: {**readers, **{name: node.fast_reader() for name, node in variant.properties.items()}}
                     for variant in self.variants for choice in variant.when}

        def read(value: Any) -> Any:
            if type(value) is not dict or not value.keys() <= names or not required <= value.keys():
                raise _REFUSED
            for check in rules:
                if check(value) is not None:
                    raise _REFUSED
            values = defaults.copy()
            fields = readers
            if discriminator:
                given = value.get(discriminator)
                if given is not None:
                    values[discriminator] = readers[discriminator](given)
                fields = by_choice.get(values[discriminator], readers)
            for name, given in value.items():
                if given is None:
                    if name in required:
                        raise _REFUSED
                elif name != discriminator:
                    # A field read as None would take its default in the full reader, which
                    # then says why.
                    if (checked := fields[name](given)) is None:
                        raise _REFUSED
                    values[name] = checked
            built = build(values) if build is not None else {name: values[name] for name in order}
            if built is None:
                raise _REFUSED
            return built
        return read

    def reader(self, *, item: bool = False) -> Reader:
        # The object's rules see the object as written (in _reader), not what it builds.
        return self._reader(item=item)

    def fast_reader(self, *, item: bool = False) -> FastReader:
        return self._fast_reader(item=item)


def _full_reader_aside(read: Reader) -> FastReader:
    """A fast reader made of a full one: its errors are collected aside, and any is Refused."""
    def fast(value: Any) -> Any:
        f = Fields()
        checked = read(f, value, "")
        if f.errors or checked is None:
            raise _REFUSED
        return checked
    return fast


def read_root(read: Reader, f: Fields, value: Any, path: str) -> Any:
    """A document's top object (spec), which must be there."""
    if value is None:
        f.error(path, "is required")
        return None
    return read(f, value, path)
