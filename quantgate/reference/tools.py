"""The tool catalogue of the reference assistant, as OpenAI-style function schemas.

These six tools are what the reference model was trained to call. Between them their parameters
cover every JSON Schema shape a gateway meets in practice: strings, integers, numbers, booleans,
enums, an array and a nested object, so a golden set built from them exercises every argument type
a quantized model could corrupt.

The schemas are deliberately strict (``additionalProperties: false``, enums, ``minimum``) so that
``validate_call`` catches a degraded model inventing keys or values; the trade-off is that a
plausible-but-unlisted argument counts as invalid, which is the behaviour we want from a gate.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema

__all__ = ["TOOL_NAMES", "all_tools", "get_tool", "tool_schema", "validate_call"]

_DATE = {"type": "string", "description": "Date as YYYY-MM-DD", "pattern": r"^\d{4}-\d{2}-\d{2}$"}

_TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather forecast for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 14},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_event",
            "description": "Create a calendar event.",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "date": _DATE,
                    "time": {"type": "string", "pattern": r"^\d{2}:\d{2}$"},
                    "duration_minutes": {"type": "integer", "minimum": 1},
                    "attendees": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["title", "date"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_flights",
            "description": "Search flights between two cities on a date.",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string"},
                    "destination": {"type": "string"},
                    "date": _DATE,
                    "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
                    "cabin": {"type": "string", "enum": ["economy", "premium", "business", "first"]},
                    "max_price": {"type": "number", "minimum": 0},
                },
                "required": ["origin", "destination", "date"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_units",
            "description": "Convert a quantity from one unit to another.",
            "parameters": {
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "from_unit": {"type": "string", "enum": ["km", "mi", "kg", "lb", "m", "ft", "l", "gal"]},
                    "to_unit": {"type": "string", "enum": ["km", "mi", "kg", "lb", "m", "ft", "l", "gal"]},
                },
                "required": ["value", "from_unit", "to_unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "place_order",
            "description": "Order a product and ship it to an address.",
            "parameters": {
                "type": "object",
                "properties": {
                    "product": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "shipping": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "street": {"type": "string"},
                            "city": {"type": "string"},
                            "postal_code": {"type": "string"},
                        },
                        "required": ["name", "street", "city", "postal_code"],
                        "additionalProperties": False,
                    },
                    "gift_wrap": {"type": "boolean"},
                },
                "required": ["product", "quantity", "shipping"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_stock_price",
            "description": "Look up the latest price of a stock.",
            "parameters": {
                "type": "object",
                "properties": {
                    "ticker": {"type": "string", "pattern": "^[A-Z]{2,5}$"},
                    "exchange": {"type": "string", "enum": ["NYSE", "NASDAQ", "LSE", "TSE"]},
                },
                "required": ["ticker"],
                "additionalProperties": False,
            },
        },
    },
)

TOOL_NAMES: tuple[str, ...] = tuple(t["function"]["name"] for t in _TOOLS)


def all_tools() -> list[dict[str, Any]]:
    """Return a fresh deep copy of every tool (callers may mutate their copy freely)."""
    return copy.deepcopy(list(_TOOLS))


def get_tool(name: str) -> dict[str, Any]:
    """Return a deep copy of the OpenAI-style tool dict called ``name`` (KeyError if unknown)."""
    for tool in _TOOLS:
        if tool["function"]["name"] == name:
            return copy.deepcopy(tool)
    raise KeyError(name)


def tool_schema(name: str) -> dict[str, Any]:
    """Return the JSON Schema of ``name``'s arguments."""
    return get_tool(name)["function"]["parameters"]


def validate_call(call: Any, tools: list[dict[str, Any]]) -> str | None:
    """Check one parsed tool call against the offered ``tools``; return an error or None if valid.

    ``call`` must be ``{"name": str, "arguments": dict}`` (arguments may also be a JSON string,
    as OpenAI ``tool_calls`` carry them) naming one of the offered tools, with arguments that
    validate against that tool's schema.
    """
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return "call is not an object with a string name"
    offered = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    if call["name"] not in offered:
        return f"tool {call['name']!r} was not offered"
    args = call.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as exc:
            return f"arguments are not JSON: {exc}"
    if not isinstance(args, dict):
        return "arguments are not an object"
    try:
        jsonschema.validate(args, offered[call["name"]])
    except jsonschema.ValidationError as exc:
        return f"arguments do not validate: {exc.message}"
    return None
