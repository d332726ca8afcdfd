"""Wire models: what emitters send, as pydantic v2 models that tolerate and keep unknown fields.

These are for typed construction and reading (producers, the gateway, tests); the ingestion hot
path validates with ``schemas.validate`` and never builds them per event.
"""
