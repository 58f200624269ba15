"""Renders results the way az does, with az's own code (knack + jmespath).

Reads a JSON list of cases on stdin, each
  {"result": "<JSON text>", "format": "json"|..., "query": str|null, "transformer": str|null}
and writes a JSON list of outcomes, one per case:
  {"parse_error": true}         --query does not compile (argparse rejects it)
  {"ok": "<what az prints>"}    the formatter's output ("" for a null result)
  {"error": "<az's message>", "python": "<exception type>"}

The steps are knack's: `CLIQuery.jmespath_type` compiles the query,
`filter_output` runs it with `jmespath.Options(collections.OrderedDict)`,
`CLI.invoke` skips a None result, `OutputProducer._FORMAT_DICT` formats, and
azure-cli's `handle_exception` words a JMESPathError.
"""

import collections
import json
import sys

import jmespath
from jmespath.exceptions import JMESPathError
from knack.output import OutputProducer
from knack.util import CLIError, CommandResultItem


def render(case):
    result = json.loads(case["result"])
    query_active = False
    if case.get("query") is not None:
        try:
            compiled = jmespath.compile(case["query"])
        except (ValueError, KeyError):
            return {"parse_error": True}
        try:
            result = compiled.search(result, jmespath.Options(collections.OrderedDict))
        except JMESPathError as ex:
            message = getattr(ex, "message", str(ex))
            return {"error": "Invalid jmespath query supplied for `--query`: {}".format(message),
                    "python": type(ex).__name__}
        except Exception as ex:  # pylint: disable=broad-except
            return {"error": str(ex), "python": type(ex).__name__}
        query_active = True
    if result is None:
        return {"ok": ""}
    item = CommandResultItem(result, table_transformer=case.get("transformer"),
                             is_query_active=query_active)
    try:
        return {"ok": OutputProducer._FORMAT_DICT[case["format"]](item)}  # pylint: disable=protected-access
    except CLIError as ex:
        return {"error": str(ex), "python": type(ex).__name__}
    except Exception as ex:  # pylint: disable=broad-except
        return {"error": str(ex), "python": type(ex).__name__}


def main():
    cases = json.load(sys.stdin)
    json.dump([render(case) for case in cases], sys.stdout)


if __name__ == "__main__":
    main()
