"""Column names and Arrow schemas of ragrec's interaction data: the one place they are spelled.

Every loader produces these tables, whatever the source format:

* interactions: ``user_id``, ``item_id`` (strings, the source's own ids), ``timestamp`` (int64;
  Unix seconds, or the position in the sequence where a source has no clock), ``rating`` (float32,
  null when the source has none), ``review`` (string or null), ``scenario`` (string), and after a
  split ``split`` (``train`` | ``valid`` | ``test``).
* items: ``item_id``, ``title`` and optional text fields ``year``, ``categories`` (list of strings:
  genres, categories), ``brand``, ``description``.
* users (optional): ``user_id`` plus free string attributes.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
RATING = "rating"
REVIEW = "review"
SCENARIO = "scenario"
SPLIT = "split"

TITLE = "title"
YEAR = "year"
CATEGORIES = "categories"
BRAND = "brand"
DESCRIPTION = "description"

TRAIN, VALID, TEST = "train", "valid", "test"
SPLIT_NAMES = (TRAIN, VALID, TEST)

DEFAULT_SCENARIO = "default"

INTERACTION_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.string(), nullable=False),
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(TIMESTAMP, pa.int64(), nullable=False),
        pa.field(RATING, pa.float32()),
        pa.field(REVIEW, pa.string()),
        pa.field(SCENARIO, pa.string(), nullable=False),
    ]
)
SPLIT_FIELD = pa.field(SPLIT, pa.string(), nullable=False)

ITEM_SCHEMA = pa.schema(
    [
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(TITLE, pa.string()),
        pa.field(YEAR, pa.int32()),
        pa.field(CATEGORIES, pa.list_(pa.string())),
        pa.field(BRAND, pa.string()),
        pa.field(DESCRIPTION, pa.string()),
    ]
)

INTERACTION_COLUMNS = tuple(INTERACTION_SCHEMA.names)
ITEM_COLUMNS = tuple(ITEM_SCHEMA.names)
