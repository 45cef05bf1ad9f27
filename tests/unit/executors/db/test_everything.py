"""Does a delete's condition match every document? Elasticsearch queries and MongoDB filters by structure."""

from __future__ import annotations

from typing import Any

import pytest

from executors.db.everything import es_matches_everything, mongo_matches_everything
from executors.db.mongo import parse_operations as mongo_ops
from executors.db.search import parse_operations as es_ops

TERM = {"term": {"user": "kim"}}

ES_EVERYTHING: list[Any] = [
    {"match_all": {}},
    {"match_all": {"boost": 1.2}},
    {"bool": {}},
    {"bool": {"must": []}},
    {"bool": {"must": {"match_all": {}}}},
    {"bool": {"filter": [{"match_all": {}}, {"bool": {}}]}},
    {"bool": {"must_not": {"match_none": {}}}},
    {"bool": {"must_not": [{"bool": {"must": {"match_none": {}}}}]}},
    {"bool": {"should": [TERM, {"match_all": {}}]}},
    {"bool": {"should": []}},
    {"constant_score": {"filter": {"match_all": {}}}},
    {"constant_score": {"filter": {"bool": {}}}},
    {"function_score": {"functions": []}},
    {"dis_max": {"queries": [TERM, {"match_all": {}}]}},
    {"query_string": {"query": "*"}},
    {"query_string": {"query": " *:* "}},
    {"simple_query_string": {"query": "(*)"}},
    {"match": {"title": {"query": "", "zero_terms_query": "all"}}},
    {"script": {"script": "return true"}},
    {"wrapper": {"query": "eyJtYXRjaF9hbGwiOnt9fQ=="}},
    {"some_new_query": {}},
    {"term": {"a": 1}, "range": {"b": {"gt": 1}}},
    {"nested": {"path": "p", "query": {"match_all": {}}}},
]

ES_NARROWING: list[Any] = [
    TERM,
    {"exists": {"field": "deleted_at"}},
    {"range": {"age": {"lt": 18}}},
    {"ids": {"values": ["1", "2"]}},
    {"bool": {"must": [{"match_all": {}}, TERM]}},
    {"bool": {"filter": TERM}},
    {"bool": {"must_not": TERM}},
    {"bool": {"must_not": {"match_all": {}}}},  # matches nothing
    {"bool": {"should": [TERM, {"exists": {"field": "x"}}]}},
    {"bool": {"must": {"match_none": {}}}},
    {"constant_score": {"filter": TERM}},
    {"query_string": {"query": "status:old"}},
    {"match": {"title": "old post"}},
]


@pytest.mark.parametrize("query", ES_EVERYTHING)
def test_es_queries_that_match_everything(query: Any) -> None:
    assert es_matches_everything(query)


@pytest.mark.parametrize("query", ES_NARROWING)
def test_es_queries_that_narrow(query: Any) -> None:
    assert es_matches_everything(query) is None


def test_es_refusal_says_why_and_names_the_option() -> None:
    op = '{"operation": "delete_by_query", "index": "i", "query": {"bool": {"must_not": {"match_none": {}}}}}'
    with pytest.raises(ValueError) as err:
        es_ops(op, "command", allow_all=False)
    assert str(err.value) == (
        "command.query: a bool with no narrowing must, filter, must_not or should clause deletes every document; "
        "set exec_options.allow_dangerous to allow it"
    )
    assert es_ops(op, "command", allow_all=True)


MONGO_EVERYTHING: list[dict[str, Any]] = [
    {},
    {"$and": []},
    {"$and": [{}, {"$and": []}]},
    {"$or": []},
    {"$or": [{"a": 1}, {}]},
    {"_id": {"$exists": True}},
    {"_id": {"$ne": None}},
    {"a": {"$nin": []}},
    {"$expr": True},
    {"$expr": {"$eq": [1, 1]}},
    {"$expr": {"$eq": ["$a", "$a"]}},  # review of issue 17: passed the guard, deleted every document
    {"$expr": {"$gte": ["$_id", "$_id"]}},
    {"$where": "true"},
    {"$comment": "clean up"},
    {"$comment": "x", "_id": {"$exists": 1}},
]

MONGO_NARROWING: list[dict[str, Any]] = [
    {"a": 1},
    {"a": {"$exists": True}},
    {"_id": {"$exists": False}},
    {"$and": [{}, {"a": 1}]},
    {"$or": [{"a": 1}, {"b": 2}]},
    {"$expr": {"$gt": ["$a", "$b"]}},
    {"$expr": {"$gt": ["$a", "$a"]}},
    {"$expr": {"$eq": ["$a", "$$ROOT.b"]}},
    {"$where": "this.a > 1"},
    {"a": {}},
    {"$comment": "x", "a": 1},
]


@pytest.mark.parametrize("flt", MONGO_EVERYTHING)
def test_mongo_filters_that_match_everything(flt: dict[str, Any]) -> None:
    assert mongo_matches_everything(flt)


@pytest.mark.parametrize("flt", MONGO_NARROWING)
def test_mongo_filters_that_narrow(flt: dict[str, Any]) -> None:
    assert mongo_matches_everything(flt) is None


def test_mongo_refusal_names_the_filter_and_the_option() -> None:
    op = '{"operation": "delete", "collection": "users", "filter": {"_id": {"$exists": true}}}'
    with pytest.raises(ValueError) as err:
        mongo_ops(op, "command", allow_all=False)
    assert str(err.value) == (
        "command.filter: the filter {'_id': {'$exists': True}} deletes every document; "
        "set exec_options.allow_dangerous to allow it"
    )
