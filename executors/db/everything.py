"""Does a delete/update condition match every document? Judged by the query's structure, without I/O.

Elasticsearch (`delete_by_query`): conservative. A query is trusted to narrow the documents only when it
is built from known narrowing parts (term, range, exists, ...); an empty `bool`, a `bool` of only
match-all parts, a `must_not` of `match_none`, a `query_string` of `*`, a `script` or an unknown query
type all count as matching everything. `exists` does not: documents without the field are spared.
MongoDB (update/delete filters): the obvious ones: `{}`, `{"$and": []}`, `{"_id": {"$exists": true}}`,
`{"$expr": true}`, an `$expr` comparing a field with itself (`{"$eq": ["$a", "$a"]}`), a filter of only
`$comment`, and combinations of those.
"""

from __future__ import annotations

import re
from typing import Any, Literal

Cover = Literal["all", "some", "none"]
"""What a query matches: every document, some (or we trust it narrows), or none."""

_ES_NARROWING = {
    "term", "terms", "terms_set", "match", "match_phrase", "match_phrase_prefix", "match_bool_prefix",
    "multi_match", "combined_fields", "range", "prefix", "wildcard", "regexp", "fuzzy", "ids", "exists",
    "geo_distance", "geo_bounding_box", "geo_polygon", "geo_shape", "shape", "intervals", "more_like_this",
    "span_term", "span_near", "span_or", "span_first", "span_multi", "span_containing", "span_within",
    "span_not", "field_masking_span", "percolate", "distance_feature", "rank_feature", "pinned", "knn",
}  # fmt: skip
_STAR_ONLY = re.compile(r"[\s()*:]*")
"""A query_string that is only stars, colons and parentheses (`*`, `*:*`, `(*)`) matches everything."""


def es_matches_everything(query: Any) -> str | None:
    """Why `query` (a delete_by_query's `query`) may match every document, or None when it narrows."""
    cover, why = _es(query)
    return why if cover == "all" else None


def _es(q: Any) -> tuple[Cover, str]:
    if not isinstance(q, dict) or len(q) != 1:
        return "all", "a query that is not one clause (its reach cannot be told)"
    ((kind, body),) = q.items()
    if kind == "match_all":
        return "all", "match_all"
    if kind == "match_none":
        return "none", ""
    if kind == "bool":
        return _es_bool(body)
    if kind == "constant_score":
        return _es(body.get("filter") if isinstance(body, dict) else None)
    if kind == "boosting":
        return _es(body.get("positive") if isinstance(body, dict) else None)
    if kind in ("function_score", "script_score"):
        inner = body.get("query", {"match_all": {}}) if isinstance(body, dict) else None
        return _es(inner)
    if kind == "dis_max":
        return _es_union(body.get("queries") if isinstance(body, dict) else None, "dis_max")
    if kind in ("nested", "has_child", "has_parent"):
        return _es(body.get("query") if isinstance(body, dict) else None)
    if kind in ("query_string", "simple_query_string"):
        text = body.get("query") if isinstance(body, dict) else None
        if not isinstance(text, str) or _STAR_ONLY.fullmatch(text):
            return "all", f"{kind} {text!r}"
        return "some", ""
    if kind in _ES_NARROWING:
        if _zero_terms_all(body):
            return "all", f"{kind} with zero_terms_query all"
        return "some", ""
    return "all", f"{kind} (a script, wrapper or unknown query: its reach cannot be told)"


def _zero_terms_all(body: Any) -> bool:
    """match queries with `zero_terms_query: all` match every document when the text has no terms."""
    if not isinstance(body, dict):
        return False
    options = [v for v in body.values() if isinstance(v, dict)] + [body]
    return any(o.get("zero_terms_query") == "all" for o in options)


def _clauses(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _es_bool(body: Any) -> tuple[Cover, str]:
    if not isinstance(body, dict):
        return "all", "a bool that is not an object"
    musts = [_es(c)[0] for key in ("must", "filter") for c in _clauses(body.get(key))]
    nots = [_es(c)[0] for c in _clauses(body.get("must_not"))]
    if "none" in musts or "all" in nots:
        return "none", ""
    if "some" in musts or "some" in nots:
        return "some", ""
    should = _clauses(body.get("should"))
    # With no must/filter, at least one should clause must match (unless minimum_should_match says 0).
    if should and not musts and str(body.get("minimum_should_match", 1)) not in ("0", "0%"):
        return _es_union(should, "bool.should")
    return "all", "a bool with no narrowing must, filter, must_not or should clause"


def _es_union(queries: Any, where: str) -> tuple[Cover, str]:
    """Documents matching any of `queries`: everything as soon as one of them matches everything."""
    covers = [_es(c) for c in _clauses(queries)]
    if not covers:
        return "all", f"an empty {where}"
    for cover, why in covers:
        if cover == "all":
            return "all", f"{where} with a clause matching everything ({why})"
    return ("none", "") if all(c == "none" for c, _ in covers) else ("some", "")


def mongo_matches_everything(flt: dict[str, Any]) -> str | None:
    """Why a mongo filter obviously matches every document, or None."""
    if _mongo_all(flt):
        return "an empty filter" if not flt else f"the filter {flt!r}"
    return None


def _mongo_all(flt: Any) -> bool:
    if not isinstance(flt, dict):
        return False
    return all(_mongo_key_all(k, v) for k, v in flt.items())


def _mongo_key_all(key: str, value: Any) -> bool:
    if key == "$comment":
        return True
    if key == "$and":
        return isinstance(value, list) and all(_mongo_all(v) for v in value)
    if key == "$or":
        return isinstance(value, list) and (not value or any(_mongo_all(v) for v in value))
    if key == "$expr":
        return _constant_true(value)
    if key == "$where":
        return isinstance(value, str) and value.strip().rstrip(";") in ("true", "return true", "1")
    if key.startswith("$"):
        return False
    if isinstance(value, dict) and value and all(k.startswith("$") for k in value):
        return all(_trivial_operator(key, op, arg) for op, arg in value.items())
    return False


def _trivial_operator(field: str, op: str, arg: Any) -> bool:
    """A field condition every document meets: `_id` exists and is never null; `$nin: []` excludes nothing."""
    if op == "$nin":
        return arg == []
    if field == "_id" and op == "$exists":
        return bool(arg)
    if field == "_id" and op == "$ne":
        return arg is None
    return False


def _constant_true(expr: Any) -> bool:
    """An `$expr` that reads no field (`true`, `1`, `{"$eq": [1, 1]}`): constant, so conservatively true."""
    if isinstance(expr, bool):
        return expr
    if isinstance(expr, (int, float)):
        return expr != 0
    if isinstance(expr, dict):
        return not _reads_field(expr) or _self_comparison(expr)
    return False


def _self_comparison(expr: dict[str, Any]) -> bool:
    """`{"$eq": ["$a", "$a"]}` (also $gte, $lte): a field compared with itself holds for every document, even
    one without the field (missing equals missing in an expression), as SQL's `WHERE id = id` nearly does."""
    if len(expr) != 1:
        return False
    ((op, args),) = expr.items()
    return (
        op in ("$eq", "$gte", "$lte")
        and isinstance(args, list)
        and len(args) == 2
        and isinstance(args[0], str)
        and args[0].startswith("$")
        and args[0] == args[1]
    )


def _reads_field(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith("$")
    if isinstance(value, dict):
        return any(_reads_field(v) for v in value.values())
    if isinstance(value, list):
        return any(_reads_field(v) for v in value)
    return False
