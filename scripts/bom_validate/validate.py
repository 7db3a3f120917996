#!/usr/bin/env python3
"""Checks owl's AI BOMs against the official specifications.

    python validate.py cyclonedx FILE...
    python validate.py spdx FILE...

Run it with the python that setup.sh (beside this file) prints.

- cyclonedx: CycloneDX 1.6 JSON against the official JSON schema, as the CycloneDX project's
  own library checks it (cyclonedx-python-lib's JsonStrictValidator: no unknown properties,
  formats checked, license ids from the SPDX list the schema embeds).
- spdx: SPDX 3.0.1 JSON-LD through the SPDX project's bindings generated from the official
  3.0.1 model (spdx-python-model): every object's type and property must exist in the model,
  every value must have the type, vocabulary entry or pattern the model gives it, every
  reference must resolve inside the document, and re-writing the document checks each
  property's minimum and maximum count. No PyPI package ships SPDX's own JSON schema
  (spdx-json-schema.json); when OWL_SPDX_SCHEMA names a copy of it, files are checked
  against it as well.

Prints "ok FILE" for a valid file and the first errors for an invalid one; exits 1 when any
file is invalid, 2 on bad usage.
"""

import io
import json
import os
import sys

MAX_ERRORS = 5
SPDX_CONTEXT = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"


def short(message, limit=300):
    return message if len(message) <= limit else message[: limit - 3] + "..."


def deepest(error):
    """The sub-error that got furthest into the document: an object that matches none of a
    oneOf's alternatives (an @graph item, a license choice) only says so, and the alternative
    it was meant to be fails deepest."""
    while getattr(error, "context", None):
        subs = error.context
        # An alternative that already fails on the object's own "type" is not the one meant.
        wrong = {e.relative_schema_path[0] for e in subs if list(e.absolute_path)[-1:] == ["type"]}
        meant = [e for e in subs if e.relative_schema_path[0] not in wrong] or subs
        error = max(meant, key=lambda e: len(e.absolute_path))
    return error


def cyclonedx_errors(text):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True) or []
    out = []
    for e in errors:
        inner = deepest(e.data)
        where = "/".join(str(p) for p in getattr(inner, "absolute_path", [])) or "(root)"
        out.append(f"{where}: {short(str(getattr(inner, 'message', inner)))}")
        if len(out) == MAX_ERRORS:
            break
    try:
        if json.loads(text).get("specVersion") != "1.6":
            out.append("specVersion: not 1.6")
    except (ValueError, AttributeError):
        pass
    return out


def spdx_model_errors(data):
    import spdx_python_model

    if data.get("@context") != SPDX_CONTEXT:
        return [f"@context: not {SPDX_CONTEXT}"]
    try:
        model, objects = spdx_python_model.load_data(data)
    except Exception as e:  # the bindings raise KeyError, TypeError, ValueError, LoadError
        return [f"does not read as SPDX 3.0.1: {type(e).__name__}: {short(str(e))}"]
    missing = objects.link()
    if missing:
        return [f"references to undefined elements: {', '.join(sorted(missing))}"]
    try:
        model.JSONLDSerializer().write(objects, io.BytesIO())
    except Exception as e:
        return [f"breaks an SPDX 3.0.1 cardinality: {type(e).__name__}: {short(str(e))}"]
    return []


def spdx_schema_errors(data, schema_path):
    import jsonschema

    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    out = []
    for e in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        e = deepest(e)
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        out.append(f"{where}: {short(e.message)} (schema {schema_path})")
        if len(out) == MAX_ERRORS:
            break
    return out


def spdx_errors(text):
    data = json.loads(text)
    if not isinstance(data, dict):
        return ["(root): not a JSON object"]
    out = spdx_model_errors(data)
    schema = os.environ.get("OWL_SPDX_SCHEMA")
    if schema:
        out += spdx_schema_errors(data, schema)
    return out


def main(argv):
    if len(argv) < 3 or argv[1] not in ("cyclonedx", "spdx"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    check = cyclonedx_errors if argv[1] == "cyclonedx" else spdx_errors
    failed = False
    for path in argv[2:]:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            errors = check(text)
        except (OSError, ValueError) as e:
            errors = [str(e)]
        if errors:
            failed = True
            print(f"invalid {path}")
            for e in errors:
                print(f"  {e}")
        else:
            print(f"ok {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
