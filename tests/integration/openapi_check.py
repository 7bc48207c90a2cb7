# SPDX-License-Identifier: MIT
"""openapi_check: checks a response settled gave against docs/openapi.yaml, so that the description is kept true by
every integration test that calls the portal API.

    import openapi_check
    openapi_check.response("GET", "/v1/invoices?limit=2", status, headers, body)   # raises harness.Failure

The operation is found by method and path template (``/v1/invoices/{id}``); the response by its status code (then
``4XX``/``5XX``, then ``default``); the schema by the response's media type (``application/json`` or
``application/problem+json``). A status the operation does not describe is a failure, as is a body that does not
match: the subset of JSON Schema the description uses (``type`` with type arrays for null, ``properties``,
``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, ``minimum``/``maximum``,
``minLength``/``maxLength``, ``pattern``, ``oneOf``/``anyOf``/``allOf``, ``$ref`` within the file). A keyword it does
not know fails loudly rather than passing unchecked.

Python 3 standard library plus Debian's python3-yaml (the description is YAML).
"""

import json
import os
import re
from urllib.parse import urlsplit

import yaml

import harness as h

_spec = None
KNOWN = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum", "maximum",
         "minLength", "maxLength", "pattern", "oneOf", "anyOf", "allOf", "$ref", "description", "format", "default",
         "examples", "example", "title", "readOnly", "deprecated", "minItems", "maxItems"}


def spec():
    global _spec
    if _spec is None:
        with open(os.path.join(h.source_dir(), "docs", "openapi.yaml"), encoding="utf-8") as f:
            _spec = yaml.safe_load(f)
    return _spec


def _ref(node):
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise h.Failure(f"openapi.yaml: only local $ref are supported, not {ref}")
        node = spec()
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        seen += 1
        if seen > 32:
            raise h.Failure(f"openapi.yaml: $ref loop at {ref}")
    return node


def operation(method, path):
    """The operation object of method and a concrete path (query ignored), and its template."""
    path = urlsplit(path).path
    for template, item in spec().get("paths", {}).items():
        rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(rx, path):
            op = item.get(method.lower())
            if op is None and method.upper() == "HEAD":
                op = item.get("get")
            if op is not None:
                return op, template
    raise h.Failure(f"openapi.yaml describes no {method} {path}")


def _type_ok(value, t):
    return {"object": isinstance(value, dict), "array": isinstance(value, list),
            "string": isinstance(value, str), "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "null": value is None}[t]


def validate(value, schema, where="body"):
    """Raises harness.Failure naming the first place where value does not match schema."""
    schema = _ref(schema)
    if schema is True or schema == {}:
        return
    unknown = set(schema) - KNOWN
    if unknown:
        raise h.Failure(f"openapi_check does not know the keywords {sorted(unknown)} (at {where})")
    for sub in schema.get("allOf", []):
        validate(value, sub, where)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            ok = 0
            for sub in schema[key]:
                try:
                    validate(value, sub, where)
                    ok += 1
                except h.Failure:
                    pass
            if ok == 0 or (key == "oneOf" and ok > 1):
                raise h.Failure(f"{where}: {json.dumps(value)[:200]} matches {ok} of the {key} schemas")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            raise h.Failure(f"{where}: {json.dumps(value)[:200]} is not of type {types}")
    if "enum" in schema and value not in schema["enum"]:
        raise h.Failure(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise h.Failure(f"{where}: {value!r} is not {schema['const']!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 62):
            raise h.Failure(f"{where}: {value!r} has a length out of bounds")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise h.Failure(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", float("-inf")) or value > schema.get("maximum", float("inf")):
            raise h.Failure(f"{where}: {value} is out of bounds")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise h.Failure(f"{where}: the required member {name!r} is missing")
        extra = schema.get("additionalProperties", True)
        for name, v in value.items():
            if name in props:
                validate(v, props[name], f"{where}.{name}")
            elif extra is False:
                raise h.Failure(f"{where}: the member {name!r} is not described")
            elif isinstance(extra, dict):
                validate(v, extra, f"{where}.{name}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1 << 62):
            raise h.Failure(f"{where}: {len(value)} items is out of bounds")
        if "items" in schema:
            for i, v in enumerate(value):
                validate(v, schema["items"], f"{where}[{i}]")


def response(method, path, status, headers, body):
    """Checks one response (headers: a dict, any case; body: bytes or str) against its description."""
    op, template = operation(method, path)
    responses = op.get("responses", {})
    desc = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
    if desc is None:
        raise h.Failure(f"openapi.yaml: {method} {template} does not describe status {status}")
    desc = _ref(desc)
    content = desc.get("content")
    if not content or method.upper() == "HEAD" or status == 304:
        return
    ctype = ""
    for k, v in (headers or {}).items():
        if k.lower() == "content-type":
            ctype = v.split(";")[0].strip().lower()
    if ctype not in content:
        raise h.Failure(f"{method} {template} {status}: content type {ctype!r} is not described ({sorted(content)})")
    schema = content[ctype].get("schema")
    if schema is None:
        return
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    try:
        doc = json.loads(text)
    except ValueError:
        raise h.Failure(f"{method} {template} {status}: the body is not JSON: {text[:200]!r}")
    validate(doc, schema, f"{method} {template} {status}")
