"""The stable error codes a verdict carries, one table for docs, tests and downstream tooling.

A code names *why* a check came out the way it did, independent of the human ``reason`` text (which
may be reworded between releases). A failing verdict carries the code of its failure; a passing one
carries ``ok``. Each check also has a "matched" code (``text.found``, ``json.valid``,
``refusal.detected``...): it is what a ``not-`` assertion fails with when the inner check matched,
so ``not-is-refusal`` fails with ``refusal.detected``, not with a generic negation code.

Codes are only ever added; renaming one is a breaking change for anyone aggregating on it.
"""

from __future__ import annotations

from types import MappingProxyType
from collections.abc import Mapping
from typing import Final

__all__ = ["CODES", "OK"]

OK: Final = "ok"

CODES: Final[Mapping[str, str]] = MappingProxyType({
    OK: "the check passed",
    # text checks (equals, contains*, icontains*, regex, starts-with)
    "text.mismatch": "equals: the output differs from the expected value",
    "text.equal": "equals matched (the failure of not-equals)",
    "text.not_found": "contains/icontains/contains-all/contains-any: an expected substring is absent",
    "text.found": "a substring was present (the failure of not-contains...)",
    "text.no_match": "regex: the pattern does not match anywhere in the output",
    "text.match": "regex matched (the failure of not-regex)",
    "text.wrong_prefix": "starts-with: the output does not start with the value",
    "text.prefix": "starts-with matched (the failure of not-starts-with)",
    # length checks
    "length.out_of_range": "word-count/token-count: the count is outside the bounds",
    "length.in_range": "the count is within the bounds (the failure of not-word-count...)",
    "length.tokens_unknown": "token-count: no token count on the line and no tokenizer configured (errored)",
    # finish reason
    "finish_reason.mismatch": "finish-reason: the output ended for another reason",
    "finish_reason.match": "finish-reason matched (the failure of not-finish-reason)",
    "finish_reason.missing": "finish-reason: the line carries no finish_reason (errored)",
    # JSON
    "json.parse_error": "is-json: the output is not RFC 8259 JSON",
    "json.not_found": "contains-json: no JSON value found in the output",
    "json.schema_mismatch": "is-json/contains-json: JSON found but it does not validate against the schema",
    "json.valid": "the output is (or contains) valid JSON (the failure of not-is-json/not-contains-json)",
    # refusal
    "refusal.not_refusal": "is-refusal: the output is not a refusal",
    "refusal.detected": "the output is a refusal (the failure of not-is-refusal)",
    # python
    "python.failed": "python: the user function returned a failing result",
    "python.passed": "python: the user function passed (the failure of not-python)",
    "python.error": "python: the user function raised (errored)",
    "python.bad_return": "python: the user function returned something not bool/number/dict (errored)",
    # tool calls: is-valid-tool-call
    "tool_call.none": "no tool call in the output",
    "tool_call.invalid_json": "a tool call's block or arguments are not JSON",
    "tool_call.arguments_not_object": "a tool call's arguments are JSON but not an object",
    "tool_call.unknown_function": "a tool call names a function that is not among the request's tools",
    "tool_call.missing_required": "a required argument is missing",
    "tool_call.type_error": "an argument has the wrong JSON type",
    "tool_call.enum_mismatch": "an argument is not one of the allowed values (enum/const)",
    "tool_call.unexpected_argument": "an argument the schema does not declare",
    "tool_call.schema_violation": "an argument breaks another schema rule (minimum, pattern, minItems...)",
    "tool_call.valid": "every tool call is valid (the failure of not-is-valid-tool-call)",
    # tool calls: tool-call-match
    "tool_call_match.count_mismatch": "a different number of calls than expected",
    "tool_call_match.name_mismatch": "a call to a function that no expected call names",
    "tool_call_match.missing_argument": "a call lacks an argument the expected call requires",
    "tool_call_match.unexpected_argument": "a call passes an argument the expected call does not list",
    "tool_call_match.type_error": "an argument's JSON type differs from every acceptable value's",
    "tool_call_match.value_mismatch": "an argument is not among the acceptable values",
    "tool_call_match.matched": "the calls match (the failure of not-tool-call-match)",
    # citations
    "citation.none": "has-citation: no [n] citation in the output",
    "citation.unknown_source": "has-citation: a citation [n] refers to no supplied source",
    "citation.cited": "the output cites supplied sources (the failure of not-has-citation)",
    # not a check: quantgate eval's verdict (type "engine") for a case the target did not answer
    "engine.error": "eval: the target failed to answer (an error or timeout); the case counts as failed",
})
