"""Structured output at volume through the official `openai` client: for one model, 50
objects for each of 5 JSON schemas (nested objects, arrays, enums, bounded numbers, required
and optional fields), at temperature 0 (50 different prompts) and at temperature 1 (the same,
sampled). Every reply must parse and validate with `jsonschema`.

    python structured_checks.py BASE_URL API_KEY MODEL [chat|completions]

`completions` (for a base model, which has no chat template): the schema goes to
/v1/completions as `response_format`, which owl takes on both routes.

Prints one line per schema and temperature, then `structured: ok`.
"""

import asyncio
import json
import sys

import jsonschema
from openai import AsyncOpenAI

BASE, KEY, MODEL = sys.argv[1], sys.argv[2], sys.argv[3]
ROUTE = sys.argv[4] if len(sys.argv) > 4 else "chat"
PER_SCHEMA = 50

SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 24},
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string", "maxLength": 32},
                    "city": {"type": "string", "minLength": 1, "maxLength": 24},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["street", "city", "zip"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "address"],
        "additionalProperties": False,
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 12},
                     "minItems": 1, "maxItems": 4},
            "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100},
                       "maxItems": 5},
        },
        "required": ["tags", "scores"],
        "additionalProperties": False,
    },
    "enums": {
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue", "black", "white"]},
            "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
            "in_stock": {"type": "boolean"},
        },
        "required": ["colour", "size", "in_stock"],
        "additionalProperties": False,
    },
    "bounded_numbers": {
        "type": "object",
        "properties": {
            # `multipleOf` bounds the digits: a bare `number` lets a sampling model write
            # digits until max_tokens (seen at T=1: a 250-digit fraction). Binary fractions,
            # because python-jsonschema checks `multipleOf` in floating point (37.111 is
            # "not a multiple of 0.0001" there).
            "latitude": {"type": "number", "minimum": -90, "maximum": 90, "multipleOf": 0.125},
            "longitude": {"type": "number", "minimum": -180, "maximum": 180, "multipleOf": 0.125},
            "elevation_m": {"type": "integer", "minimum": 0, "maximum": 9000},
            "humidity": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.0625},
        },
        "required": ["latitude", "longitude", "elevation_m", "humidity"],
        "additionalProperties": False,
    },
    "required_fields": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "title": {"type": "string", "minLength": 1, "maxLength": 40},
            "done": {"type": "boolean"},
            "note": {"type": "string", "maxLength": 40},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["id", "title", "done"],
        "additionalProperties": False,
    },
}

SUBJECTS = [
    "a baker in Lyon", "a lighthouse keeper", "a student in Nairobi", "a retired pilot", "a cat owner",
    "a chess club", "a mountain village", "a bicycle shop", "a jazz band", "a coffee farm",
    "a museum", "a fishing boat", "a library", "a startup", "a marathon runner",
    "a violin maker", "a train station", "a bakery order", "a garden", "a school trip",
    "a hotel room", "a film festival", "a robot", "a volcano", "a desert camp",
    "a ski resort", "a bookshop", "a harbour", "a bridge", "a castle",
    "a nurse", "a farmer", "a teacher in Oslo", "a painter", "a football team",
    "a weather station", "a river cruise", "a night market", "a space probe", "a tea house",
    "a post office", "a zoo", "a sailing race", "a recipe", "a guitar",
    "a laptop", "an island", "a forest trail", "a music school", "a pharmacy",
]


async def one(client, schema_name, schema, subject, temperature, seed):
    response_format = {"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema, "strict": True}}
    if ROUTE == "chat":
        r = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Describe {subject} as a JSON object."}],
            response_format=response_format, temperature=temperature, seed=seed, max_tokens=300,
        )
    else:
        r = await client.completions.create(
            model=MODEL, prompt=f"Describe {subject} as a JSON object:\n",
            extra_body={"response_format": response_format}, temperature=temperature, seed=seed, max_tokens=300,
        )
    choice = r.choices[0]
    text = choice.message.content if ROUTE == "chat" else choice.text
    try:
        jsonschema.validate(json.loads(text), schema)
    except Exception as e:  # noqa: BLE001 - reported with the text
        raise AssertionError(f"{schema_name} at T={temperature} ({subject}): {e}\n{text!r} ({choice.finish_reason})")
    return r.usage.completion_tokens


async def main():
    client = AsyncOpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=600)
    limit = asyncio.Semaphore(8)

    async def bounded(*args):
        async with limit:
            return await one(client, *args)

    for temperature in (0.0, 1.0):
        for name, schema in SCHEMAS.items():
            jobs = [bounded(name, schema, SUBJECTS[i], temperature, 1000 + i) for i in range(PER_SCHEMA)]
            tokens = await asyncio.gather(*jobs)
            print(f"{name} T={temperature}: {PER_SCHEMA}/{PER_SCHEMA} valid, {sum(tokens)} tokens")
    print("structured: ok")


asyncio.run(main())
