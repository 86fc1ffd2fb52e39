#!/usr/bin/env python3
"""Writes the reference fixtures for the C++ Jinja engine (common/chat_template).

Renders with Python's jinja2 (Debian: apt-get install python3-jinja2) in the
environment Hugging Face transformers uses for chat templates:
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
loopcontrols extension and {% generation %}, the json.dumps `tojson` filter
and the raise_exception / strftime_now globals.

    python3 tools/chat_template_reference.py [--fixtures tests/chat_template/fixtures]

reads, under the fixtures folder,
  templates/models.json, templates/<model>.jinja  (tools/fetch_chat_templates.sh)
  conversations.json  the conversation corpus
  snippets.txt        small templates, one block each:
                        ### name: <name>
                        ### context: <JSON object>         (optional)
                        ### refused: <why>                 (optional)
                        ### crlf: yes                       (optional)
                        <template lines>
                        ### end
                      The template is the text between the headers and
                      "### end" (no final newline unless an empty line is
                      left before "### end"). Lines outside blocks are notes.
                      `refused` marks what the C++ engine deliberately
                      refuses although Python renders it; `crlf` turns the
                      template's newlines into \r\n.
and writes
  reference_expected.json  every model x conversation: output or error
  snippets_expected.json   every snippet: output or error

The repository keeps both files formatted by clang-format (run
`clang-format -i` on them after regenerating). An error is recorded with its
Python type and message; the C++ tests require
an error too, with the same message when the type is TemplateError (raised by
the template's raise_exception).

    python3 tools/chat_template_reference.py --unicode-tables

prints common/chat_template/unicode_tables.inc (Python's str.isprintable and
the cased characters, from this Python's Unicode database).
"""
import argparse
import json
import os
import re
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class AssistantTracker(Extension):
    """transformers' {% generation %} ... {% endgeneration %}: renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_assistant", []), [], [], body).set_lineno(lineno)

    def _render_assistant(self, caller):
        return caller()


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(format):
    return datetime.now().strftime(format)


def make_environment():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, source, context):
    """{"output": text} or {"error_type", "error", "phase"}."""
    try:
        template = env.from_string(source)
    except Exception as e:  # noqa: BLE001 - every failure is a fixture
        return {"error_type": type(e).__name__, "error": str(e), "phase": "parse"}
    try:
        # Object addresses ("<generator object ... at 0x7f...>") vary per run.
        return {"output": re.sub(r" at 0x[0-9a-f]+>", " at 0x...>", template.render(**context))}
    except Exception as e:  # noqa: BLE001
        return {"error_type": type(e).__name__, "error": str(e), "phase": "render"}


def environment_note():
    return f"jinja2 {jinja2.__version__}, Python {sys.version.split()[0]}"


def conversation_context(conversation):
    """The variables transformers passes besides the special tokens."""
    context = {
        "messages": conversation["messages"],
        "tools": conversation.get("tools"),
        "documents": None,
        "add_generation_prompt": conversation.get("add_generation_prompt", False),
    }
    context.update(conversation.get("extra", {}))
    return context


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print(f"chat_template_reference: wrote {path}")


def reference_cases(env, fixtures):
    templates = os.path.join(fixtures, "templates")
    with open(os.path.join(templates, "models.json"), encoding="utf-8") as f:
        models = json.load(f)
    with open(os.path.join(fixtures, "conversations.json"), encoding="utf-8") as f:
        conversations = json.load(f)
    contexts = {c["name"]: conversation_context(c) for c in conversations}
    cases = []
    for model, info in models.items():
        with open(os.path.join(templates, model + ".jinja"), encoding="utf-8", newline="") as f:
            source = f.read()
        for conversation in conversations:
            context = dict(contexts[conversation["name"]])
            context.update(info["tokens"])
            case = {"model": model, "conversation": conversation["name"]}
            case.update(render(env, source, context))
            cases.append(case)
    write_json(os.path.join(fixtures, "reference_expected.json"), {
        "generated_by": f"tools/chat_template_reference.py ({environment_note()})",
        "models": {model: info["tokens"] for model, info in models.items()},
        "conversations": contexts,
        "cases": cases,
    })


def parse_snippets(path):
    snippets = []
    current = None
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        if current is None:
            if line.startswith("### name:"):
                current = {"name": line[len("### name:"):].strip(), "context": {}, "lines": [], "line": number}
            continue
        if line == "### end":
            newline = "\r\n" if current.get("crlf") else "\n"
            snippet = {"name": current["name"], "template": newline.join(current["lines"]),
                       "context": current["context"]}
            if "refused" in current:
                snippet["refused"] = current["refused"]
            snippets.append(snippet)
            current = None
        elif not current["lines"] and line.startswith("### context:"):
            current["context"] = json.loads(line[len("### context:"):])
        elif not current["lines"] and line.startswith("### crlf:"):
            current["crlf"] = line[len("### crlf:"):].strip() == "yes"
        elif not current["lines"] and line.startswith("### refused:"):
            current["refused"] = line[len("### refused:"):].strip()
        else:
            current["lines"].append(line)
    if current is not None:
        sys.exit(f"{path}:{current['line']}: snippet {current['name']!r} has no '### end'")
    names = [s["name"] for s in snippets]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        sys.exit(f"{path}: duplicate snippet names: {sorted(duplicates)}")
    return snippets


def snippet_cases(env, fixtures):
    snippets = parse_snippets(os.path.join(fixtures, "snippets.txt"))
    for snippet in snippets:
        snippet.update(render(env, snippet["template"], snippet["context"]))
    write_json(os.path.join(fixtures, "snippets_expected.json"), {
        "generated_by": f"tools/chat_template_reference.py ({environment_note()})",
        "snippets": snippets,
    })


def print_unicode_tables():
    def ranges(predicate, first=0):
        out, start = [], None
        for cp in range(first, 0x110001):
            hit = cp < 0x110000 and predicate(cp)
            if hit and start is None:
                start = cp
            if not hit and start is not None:
                out.append((start, cp - 1))
                start = None
        return out

    def cased(cp):
        c = chr(cp)
        return (c.lower() != c or c.upper() != c or c.title() != c or c.islower() or c.isupper()
                or c.istitle())

    import unicodedata
    print("// Generated by `python3 tools/chat_template_reference.py --unicode-tables` (Python "
          f"{sys.version_info.major}.{sys.version_info.minor},")
    print(f"// Unicode {unicodedata.unidata_version}). Sorted, non-overlapping [first, last] code point ranges.")
    tables = [
        ("kNonPrintable", "// Characters for which Python's str.isprintable() is false.",
         ranges(lambda cp: not chr(cp).isprintable())),
        ("kCasedNonAscii", "// Non-ASCII characters that Python's lower/upper/title/capitalize or\n"
         "// islower/isupper/istitle treat as cased.", ranges(cased, 0x80)),
    ]
    for name, comment, table in tables:
        print()
        print(comment)
        print(f"constexpr Range {name}[] = {{")
        line = "   "
        for first, last in table:
            item = f"{{0x{first:X}, 0x{last:X}}},"
            if len(line) + len(item) + 1 > 98:
                print(line)
                line = "   "
            line += " " + item
        print(line)
        print("};")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--fixtures", default=os.path.join(root, "tests", "chat_template", "fixtures"))
    parser.add_argument("--unicode-tables", action="store_true")
    args = parser.parse_args()
    if args.unicode_tables:
        print_unicode_tables()
        return
    env = make_environment()
    reference_cases(env, args.fixtures)
    snippet_cases(env, args.fixtures)


if __name__ == "__main__":
    main()
