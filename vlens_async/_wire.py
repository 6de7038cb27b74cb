"""The wire format: the one private cattrs converter, dates, and fast JSON bodies.

Why a private converter built by :func:`make_converter` (never cattrs' global one): the rules below
are specific to Vlens and must not leak into, or be changed by, anyone else's cattrs use.

The rules, from the reference pages in ``shared/seeds``:

- Keys are matched case-insensitively and without underscores, so ``transaction_id`` and
  ``transactionId``, ``Validations`` and ``validations``, ``AML``/``aml``, ``maritalStatus`` and
  ``marital_status`` all land on the same field. When a response carries both spellings, the first
  non-null one wins, except for validation errors, whose lists are merged (nothing is lost).
- Unknown keys are ignored (the API adds fields); ``null`` means "absent" (the field's default),
  and so does a blank string in an optional date, number or bool field (a value OCR could not
  read comes back as ``""``).
- Scalars are strict: a bool is a JSON bool (or 0/1, "true"/"false"), not any truthy value; a
  string field accepts a number (an ID number sent as a JSON number) or a bool (as "true" or
  "false"), but not an object.
- Dates are ISO 8601 with 0 to 7 fractional digits (.NET writes 7; Python reads at most 6) and an
  optional zone; a naive time is UTC, as the API documents.
- Free-form fields (typed ``Any``: ``deviceInfo``, ``error_descriptions``) are bounded at parse
  time: at most :data:`MAX_FREE_FORM_DEPTH` levels of nesting and :data:`MAX_FREE_FORM_ITEMS`
  values in all. A deeper or bigger value is refused (the whole response, as
  :class:`~vlens_async.errors.ResponseDecodeError` naming the field's path, never its keys or
  values), not truncated: nothing is silently altered, and no model can later hold a value that
  ``repr()``, a snapshot or a journal would blow up on.
- Any failure becomes :class:`~vlens_async.errors.ResponseDecodeError` with cattrs' readable paths
  (``transform_error``), never a raw ``KeyError``/``TypeError``, and never the offending value.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import UnionType
from typing import Any, Final, TypeVar, Union

import attrs
import cattrs
import orjson
import pybase64
from cattrs.gen import make_dict_structure_fn
from cattrs.v import format_exception

from .errors import ResponseDecodeError
from .models import CLIENT_SIDE, WIRE_ALIASES, Services

__all__ = [
    "MAX_FREE_FORM_DEPTH",
    "MAX_FREE_FORM_ITEMS",
    "b64decode",
    "dumps",
    "encode_body",
    "envelope_field",
    "is_envelope",
    "loads",
    "make_converter",
    "normalise_key",
    "parse_datetime",
    "structure",
    "to_plain",
]

T = TypeVar("T")

# Top-level keys of the Vlens envelope; a JSON object with none of them is not an envelope.
ENVELOPE_KEYS: Final = frozenset(
    {"services", "data", "errorcode", "errormessage", "errordescriptions"}
)

# What a free-form (``Any``) field may hold: the real ``deviceInfo`` is a flat object of a few
# strings; these are far above it and far below what recursion or memory would notice.
MAX_FREE_FORM_DEPTH: Final = 32
MAX_FREE_FORM_ITEMS: Final = 10_000

_MAX_ERRORS_SHOWN: Final = 5
# An APIError message is cut at 300 characters (errors.redact); keep whole problems within it.
_MESSAGE_LIMIT: Final = 300

_DATETIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:[.,](?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|z|[+-]\d{2}:?\d{2})?$"
)


_NORMALISED: dict[str, str] = {}
_NORMALISED_MAX: Final = 4096


def normalise_key(key: str) -> str:
    """Fold a wire key to the form fields are matched by: lower case, no underscores."""
    # Responses repeat the same few dozen keys: remember them (bounded, in case a server sends
    # ever-new keys).
    folded = _NORMALISED.get(key)
    if folded is None:
        folded = key.replace("_", "").replace("-", "").lower()
        if len(_NORMALISED) < _NORMALISED_MAX:
            _NORMALISED[key] = folded
    return folded


def parse_datetime(value: str) -> datetime:
    """Parse an ISO 8601 date or date-time with 0 to 7 (or more) fractional digits.

    Fractions beyond microseconds are truncated; a value without a zone is taken as UTC.
    Raises ``ValueError`` (without echoing the value) when it is not such a date.
    """
    match = _DATETIME.match(value.strip())
    if match is None:
        raise ValueError("not an ISO 8601 date")
    text = match["date"]
    if match["time"]:
        clock = match["time"] if match["time"].count(":") == 2 else match["time"] + ":00"
        text += "T" + clock
        if match["frac"]:
            text += "." + match["frac"][:6].ljust(6, "0")
    tz = match["tz"]
    if tz and tz not in ("Z", "z"):
        text += tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not a valid calendar date") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --- strict scalar hooks: messages never include the value (it may be personal data) ---


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise TypeError("expected a string")


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise ValueError("expected an integer")


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("expected a boolean")


def _structure_datetime(value: Any, _: type) -> datetime:
    if not isinstance(value, str):
        raise TypeError("expected an ISO 8601 string")
    return parse_datetime(value)


class _FreeFormTooLarge(ValueError):
    """A free-form value past the bounds; its text is ours (no key or value of the server's)."""


def _check_free_form(value: Any) -> None:
    # Iterative (a value deep enough to matter would overflow a recursive walk).
    count = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_FREE_FORM_ITEMS:
            raise _FreeFormTooLarge(f"free-form value holds more than {MAX_FREE_FORM_ITEMS} items")
        if isinstance(item, dict | list):
            if depth > MAX_FREE_FORM_DEPTH:
                raise _FreeFormTooLarge(
                    f"free-form value nests deeper than {MAX_FREE_FORM_DEPTH} levels"
                )
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _structure_any(value: Any, _: type) -> Any:
    if isinstance(value, dict | list):
        _check_free_form(value)
    return value


# --- attrs classes: case-insensitive keys, aliases, nulls, merged validation lists ---


def _validation_list(value: Any) -> list[Any]:
    """The ``validation_errors`` list inside ``services.validations`` (a dict or a bare list)."""
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if isinstance(key, str) and normalise_key(key) == "validationerrors":
                if inner is None:
                    return []
                if isinstance(inner, list):
                    return inner
                raise TypeError("validation_errors is not a list")
        return []
    raise TypeError("validations is not an object")


def _frozen(value: Any, depth: int = 0) -> Any:
    # A hashable stand-in equal exactly when the JSON values are equal (dicts by their items,
    # whatever their order), so duplicates are found in one pass instead of a pairwise scan.
    if depth > MAX_FREE_FORM_DEPTH:
        raise _FreeFormTooLarge(f"validation error nests deeper than {MAX_FREE_FORM_DEPTH} levels")
    if isinstance(value, dict):
        return frozenset((key, _frozen(item, depth + 1)) for key, item in value.items())
    if isinstance(value, list):
        return tuple(_frozen(item, depth + 1) for item in value)
    return value


def _merge_unique(lists: Iterable[list[Any]]) -> list[Any]:
    # Linear: a server may send tens of thousands of validation errors.
    merged: list[Any] = []
    seen: set[Any] = set()
    for items in lists:
        for item in items:
            key = _frozen(item)
            if key not in seen:
                seen.add(key)
                merged.append(item)
    return merged


def _key_index(cls: type) -> dict[str, str]:
    index: dict[str, str] = {}
    for field in attrs.fields(cls):
        if field.metadata.get(CLIENT_SIDE):
            continue
        index[normalise_key(field.name)] = field.name
        for alias in field.metadata.get(WIRE_ALIASES, ()):
            index[normalise_key(alias)] = field.name
    return index


def _attrs_hook_factory(cls: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    origin = getattr(cls, "__origin__", None) or cls
    inner = make_dict_structure_fn(cls, converter)
    index = _key_index(origin)
    merges_validations = origin is Services

    def structure_attrs(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError("expected a JSON object")
        kwargs: dict[str, Any] = {}
        validation_lists: list[list[Any]] = []
        for key, item in value.items():
            name = index.get(normalise_key(key)) if isinstance(key, str) else None
            if name is None or item is None:
                continue
            if merges_validations and name == "validations":
                validation_lists.append(_validation_list(item))
            elif name not in kwargs:
                kwargs[name] = item
        if validation_lists:
            kwargs["validations"] = _merge_unique(validation_lists)
        return inner(kwargs, cls)

    return structure_attrs


def _is_optional(type_: Any) -> bool:
    args = getattr(type_, "__args__", ())
    return (
        (getattr(type_, "__origin__", None) in (Union, UnionType) or isinstance(type_, UnionType))
        and len(args) == 2
        and type(None) in args
    )


def _optional_hook_factory(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    # ``X | None``: resolve X's hook once, instead of cattrs' dispatch on every value.
    inner_type = next(arg for arg in type_.__args__ if arg is not type(None))
    inner = converter.get_structure_hook(inner_type)
    blank_is_absent = inner_type is not str and inner_type is not Any

    def structure_optional(value: Any, _: Any) -> Any:
        if value is None or (blank_is_absent and isinstance(value, str) and not value.strip()):
            return None
        return inner(value, inner_type)

    return structure_optional


def make_converter() -> cattrs.Converter:
    """Build the private converter with the Vlens wire rules (see the module docstring)."""
    converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
    # Scalars first: generated class hooks look these up when they are built.
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_structure_hook_func(lambda t: t is Any, _structure_any)
    converter.register_structure_hook_factory(attrs.has, _attrs_hook_factory)
    converter.register_structure_hook_factory(_is_optional, _optional_hook_factory)
    # The other way, for snapshots and reports: plain JSON with ISO dates and lists.
    converter.register_unstructure_hook(datetime, lambda value: value.isoformat())
    return converter


_CONVERTER: Final = make_converter()


def structure(payload: Any, cls: type[T]) -> T:
    """Turn decoded JSON into ``cls``; any mismatch raises :class:`ResponseDecodeError`."""
    try:
        return _CONVERTER.structure(payload, cls)
    except Exception as exc:  # the boundary: whatever cattrs or a hook raised, it is ours now
        problems = cattrs.transform_error(exc, path="$", format_exception=_problem)
        raise ResponseDecodeError(_shape_message(problems), envelope=payload) from exc


def _problem(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, _FreeFormTooLarge):
        return str(exc)
    return format_exception(exc, type_)


def _shape_message(problems: list[str]) -> str:
    # Whole problems only ("<what> @ <path>"), as many as fit before the error's message limit,
    # then a count: a path cut short by that limit would name a field that does not exist.
    head = "response does not match the expected shape: "
    shown = 0
    for count in range(1, min(len(problems), _MAX_ERRORS_SHOWN) + 1):
        if count > 1 and len(_joined(head, problems, count)) > _MESSAGE_LIMIT:
            break
        shown = count
    return _joined(head, problems, shown)


def _joined(head: str, problems: list[str], shown: int) -> str:
    more = len(problems) - shown
    return head + "; ".join(problems[:shown]) + (f" (and {more} more)" if more > 0 else "")


def to_plain(obj: Any) -> Any:
    """A model as plain JSON (snake_case keys, ISO 8601 dates, lists); :func:`structure` reads it
    back (the client-side fields of :class:`~vlens_async.models.VerificationResponse` excepted)."""
    return _plain(_CONVERTER.unstructure(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def is_envelope(payload: Any) -> bool:
    """True when ``payload`` is a JSON object carrying at least one envelope key."""
    if not isinstance(payload, dict):
        return False
    return any(isinstance(k, str) and normalise_key(k) in ENVELOPE_KEYS for k in payload)


def envelope_field(payload: Mapping[str, Any], name: str) -> Any:
    """Read a top-level key case-insensitively (``error_code`` or ``errorCode``)."""
    wanted = normalise_key(name)
    for key, value in payload.items():
        if isinstance(key, str) and normalise_key(key) == wanted and value is not None:
            return value
    return None


# --- bodies ---


def loads(body: bytes) -> Any:
    """Decode JSON with orjson (raises ``orjson.JSONDecodeError``, a ``ValueError``)."""
    return orjson.loads(body)


def dumps(obj: Any) -> bytes:
    """Encode JSON with orjson."""
    return orjson.dumps(obj)


def encode_body(fields: Mapping[str, Any], images: Mapping[str, bytes]) -> bytes:
    """Build a JSON object from small ``fields`` plus raw ``images`` sent base64-encoded.

    The base64 text is spliced in as bytes rather than passed through ``json.dumps``: base64 never
    needs escaping, so this skips a decode to ``str`` and orjson's scan of megabytes of text.
    About 12 GB/s (0.03 ms for a 366 KB scan): the client runs it on the loop up to 4 MiB of images.
    """
    head = orjson.dumps(dict(fields))
    parts: list[bytes] = [head[:-1]]
    first = head == b"{}"
    for name, data in images.items():
        parts.append(b"" if first else b",")
        first = False
        parts.append(orjson.dumps(name))
        parts.append(b':"')
        parts.append(pybase64.b64encode(data))
        parts.append(b'"')
    parts.append(b"}")
    return b"".join(parts)


def b64decode(text: str) -> bytes:
    """Decode base64 from the server (tolerating a ``data:...;base64,`` prefix and whitespace)."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    compact = "".join(text.split())
    try:
        return pybase64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        pass  # pybase64 is stricter than the stdlib on surplus padding: let the stdlib judge
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ResponseDecodeError("the image in the response is not valid base64") from exc
