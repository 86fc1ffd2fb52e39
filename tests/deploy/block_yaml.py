"""A block-style YAML subset, read with the standard library only: mappings,
sequences, plain / quoted scalars, flow sequences and flow mappings of scalars,
| and |- block scalars, comments, "---" document separators. Anything outside
the subset raises YamlError naming the file and line (used by
check_manifests.py for deploy/k8s)."""

import json
import re


class YamlError(Exception):
    pass


def _strip_comment(line):
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or line[i - 1] in " -[{:,"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_flow(text, where):
    items, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            cur += ch
        elif ch in "[{":
            raise YamlError(f"{where}: nested flow collections are not supported")
        elif ch == ",":
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        items.append(cur.strip())
    return items


def _scalar(text, where):
    t = text.strip()
    if t == "" or t in ("~", "null"):
        return None
    if t.startswith('"'):
        if not t.endswith('"') or len(t) < 2:
            raise YamlError(f"{where}: unterminated string {t}")
        return json.loads(t)
    if t.startswith("'"):
        if not t.endswith("'") or len(t) < 2:
            raise YamlError(f"{where}: unterminated string {t}")
        return t[1:-1].replace("''", "'")
    if t.startswith("["):
        if not t.endswith("]"):
            raise YamlError(f"{where}: multi-line flow sequences are not supported")
        return [_scalar(x, where) for x in _split_flow(t[1:-1], where)]
    if t.startswith("{"):
        if not t.endswith("}"):
            raise YamlError(f"{where}: multi-line flow mappings are not supported")
        out = {}
        for item in _split_flow(t[1:-1], where):
            k, v = _split_key(item, where)
            if k is None:
                raise YamlError(f"{where}: bad flow mapping entry {item!r}")
            out[k] = _scalar(v, where)
        return out
    if t[0] in "&*!%@`>|":
        raise YamlError(f"{where}: unsupported YAML construct {t!r}")
    if t in ("true", "True"):
        return True
    if t in ("false", "False"):
        return False
    if re.fullmatch(r"0[0-7]+", t):
        # YAML 1.1, as kubectl reads it (sigs.k8s.io/yaml): 0440 is octal.
        return int(t, 8)
    if re.fullmatch(r"[-+]?[0-9]+", t):
        return int(t)
    if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", t):
        return float(t)
    return t


def _split_key(text, where):
    """'key: value' -> (key, value text); (None, None) when not a mapping entry."""
    if text[:1] in "\"'":
        end = text.find(text[0], 1)
        if end < 0:
            raise YamlError(f"{where}: unterminated key")
        rest = text[end + 1:]
        if rest == ":" or rest.startswith(": "):
            return _scalar(text[: end + 1], where), rest[1:].strip()
        return None, None
    m = re.match(r"([^\s\[\]{}#,][^#]*?):(?:\s+(.*))?$", text)
    if not m or text.startswith("- ") or text == "-":
        return None, None
    return m.group(1), (m.group(2) or "")


class _Lines:
    def __init__(self, text, name):
        self.items = []  # [indent, content, lineno]
        self.raw = text.split("\n")
        self.name = name

    def where(self, i):
        return f"{self.name}:{self.items[i][2]}" if i < len(self.items) else f"{self.name}:EOF"


def _parse_block(L, i, indent):
    if i >= len(L.items) or L.items[i][0] < indent:
        return None, i
    ind, text, _ = L.items[i]
    if ind != indent:
        raise YamlError(f"{L.where(i)}: unexpected indentation")
    if text == "-" or text.startswith("- "):
        return _parse_seq(L, i, indent)
    return _parse_map(L, i, indent)


def _value_after(L, i, indent, value_text, seq_same_indent):
    """Value of a 'key:' or '- ' whose own text is value_text, at line i-1."""
    where = L.where(i - 1)
    if value_text in ("|", "|-"):
        return _block_scalar(L, i, indent, value_text == "|-")
    if value_text != "":
        return _scalar(value_text, where), i
    if i < len(L.items):
        nind, ntext, _ = L.items[i]
        if nind > indent:
            return _parse_block(L, i, nind)
        if seq_same_indent and nind == indent and (ntext == "-" or ntext.startswith("- ")):
            return _parse_seq(L, i, indent)
    return None, i


def _block_scalar(L, i, indent, strip):
    # Block scalars keep their raw lines (comments included): re-read them.
    start_line = L.items[i - 1][2]
    lines, j = [], start_line  # raw index of the first content line
    body_indent = None
    while j < len(L.raw):
        raw = L.raw[j]
        if raw.strip() == "":
            lines.append("")
            j += 1
            continue
        cur = len(raw) - len(raw.lstrip(" "))
        if cur <= indent:
            break
        if body_indent is None:
            body_indent = cur
        lines.append(raw[body_indent:])
        j += 1
    while i < len(L.items) and L.items[i][2] <= j:
        i += 1
    text = "\n".join(lines).rstrip("\n")
    return (text if strip else text + "\n"), i


def _parse_map(L, i, indent):
    out = {}
    while i < len(L.items) and L.items[i][0] == indent:
        ind, text, _ = L.items[i]
        if text == "-" or text.startswith("- "):
            break
        key, value_text = _split_key(text, L.where(i))
        if key is None:
            raise YamlError(f"{L.where(i)}: expected 'key: value', got {text!r}")
        if key in out:
            raise YamlError(f"{L.where(i)}: duplicate key {key!r}")
        out[key], i = _value_after(L, i + 1, indent, value_text, True)
    if i < len(L.items) and L.items[i][0] > indent:
        raise YamlError(f"{L.where(i)}: unexpected indentation")
    return out, i


def _parse_seq(L, i, indent):
    out = []
    while i < len(L.items) and L.items[i][0] == indent:
        ind, text, lineno = L.items[i]
        if not (text == "-" or text.startswith("- ")):
            break
        rest = text[1:].strip()
        key, _ = _split_key(rest, L.where(i)) if rest else (None, None)
        if key is not None:
            # "- key: value": a mapping whose keys sit two columns in.
            L.items[i] = [indent + 2 + (len(text) - 2 - len(text[2:].lstrip())), rest, lineno]
            value, i = _parse_map(L, i, L.items[i][0])
        else:
            value, i = _value_after(L, i + 1, indent, rest, False)
        out.append(value)
    return out, i


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    docs, chunk, chunk_start = [], [], 0
    raw_lines = text.split("\n")
    for n, line in enumerate(raw_lines + ["---"]):
        if line.rstrip() == "---":
            L = _Lines("\n".join(raw_lines[:n]), path)  # raw lines keep their numbering
            L.raw = raw_lines
            for k in range(chunk_start, n):
                content = _strip_comment(raw_lines[k])
                if content.strip() == "":
                    continue
                if "\t" in content[: len(content) - len(content.lstrip())]:
                    raise YamlError(f"{path}:{k + 1}: tab indentation")
                L.items.append([len(content) - len(content.lstrip(" ")), content.strip(), k + 1])
            if L.items:
                doc, end = _parse_block(L, 0, L.items[0][0])
                if end != len(L.items):
                    raise YamlError(f"{L.where(end)}: could not parse from here")
                docs.append(doc)
            chunk_start = n + 1
    return docs
