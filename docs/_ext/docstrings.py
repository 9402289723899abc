"""Docstrings as the package writes them, rendered as written.

The package's docstrings give shapes and formulas as blocks laid out in columns
(``mu = mean(x)      var = mean((x - mu)^2)``), indented or with hanging
indentation. reStructuredText would read such a block as a quotation or a
definition list and re-flow it, and read ``*`` or ``|`` in it as markup. This
hook, run on every docstring before napoleon (whose numpy-style sections it
leaves to napoleon, escaping only their descriptions):

- makes each laid-out block a literal block, so it keeps its columns and
  characters: an indented block after a paragraph, the deeper lines of a
  paragraph with hanging indentation (the whole paragraph when its first line
  is itself laid out in columns), and a paragraph of two or more column rows;
- escapes ``*`` and ``|`` in prose, which the docstrings use as arithmetic
  (``(*, D)``, ``x * y``), never as emphasis or substitutions.

Roles (``:func:``, ``:math:``) and directives (``.. math::``, the optimizers'
formulas, typeset by MathJax) pass through unchanged.
"""
import re

_COLUMNS = re.compile(r"\S {2,}\S")
_MARKUP = (".. ", ":", "- ", "* ", "+ ", ">>>", "|")
_SPANS = re.compile(r"(``.*?``|:[\w:.-]+:`[^`]*`|`[^`]*`_{0,2})")


def _indent(line):
    return len(line) - len(line.lstrip())


def _escape(line):
    parts = _SPANS.split(line)
    for k in range(0, len(parts), 2):
        parts[k] = re.sub(r"(?<!\\)([*|])", r"\\\1", parts[k])
    return "".join(parts)


def _is_markup(head):
    return head.startswith(_MARKUP) or bool(re.match(r"\d+[.)] ", head))


def _open_literal(out, indent, after):
    """End the prose line ``after`` (index in out) with '::', or add a '::' paragraph."""
    last = out[after].rstrip() if after is not None else ""
    if after is not None and last.endswith(":") and not last.endswith("::"):
        out[after] = last + ":"
    elif after is not None and not last.endswith("::"):
        out[after] = last + " ::"
    elif after is None:
        out.append(" " * indent + "::")
    out.append("")


_SECTION = re.compile(r"^\s*-{3,}\s*$")


def literal_blocks(lines):
    """Rewrite ``lines`` (a prepared docstring) in place, as the module docstring says."""
    out = []
    n = len(lines)
    i = 0
    section = None          # indentation of a numpy-style section's header
    prose_base = 0          # indentation of the last prose paragraph
    body_of = None          # indentation of a '::' or directive line whose body follows
    while i < n:
        line = lines[i]
        if not line.strip():
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        if i + 1 < n and _SECTION.match(lines[i + 1]):
            section = base              # "Parameters" over "----------": napoleon's
            out.extend(lines[i:i + 2])
            i += 2
            continue
        if section is not None:
            # Inside a section: the "name : type" lines as they are, descriptions escaped.
            out.append(_escape(line) if base > section else line)
            i += 1
            continue
        if body_of is not None and base > body_of:
            out.append(line)            # a literal block or directive body: verbatim
            i += 1
            continue
        body_of = None
        j = i
        while j < n and lines[j].strip():
            j += 1
        para = lines[i:j]
        head = para[0].strip()

        if base > prose_base and out and not out[-1].strip() and any(l.strip() for l in out):
            # An indented block after a paragraph: literal up to the next line at the
            # paragraph's indentation or less.
            last = max(k for k, l in enumerate(out) if l.strip())
            out.pop()                    # the blank line; re-added by _open_literal
            _open_literal(out, prose_base, last if not out[last].rstrip().endswith("::") else None)
            # Lines written against the block with no blank line between (a label such
            # as "train:" over more formulas) belong to it too.
            block = []
            while i < n and (not lines[i].strip() or _indent(lines[i]) > prose_base
                             or (block and block[-1].strip())):
                block.append(lines[i])
                i += 1
            out.extend("    " + l if l.strip() else l for l in block)
            continue

        if _is_markup(head):
            out.extend(_escape(l) if not head.startswith(".. ") else l for l in para)
            if para[-1].rstrip().endswith("::") or head.startswith(".. "):
                body_of = base
            prose_base = base
            i = j
            continue

        deeper = [k for k in range(1, len(para)) if _indent(para[k]) > base]
        column_rows = sum(bool(_COLUMNS.search(l.strip())) for l in para)
        if (deeper and _COLUMNS.search(head)) or column_rows >= 2:
            # The whole paragraph is laid out: keep it as it is.
            _open_literal(out, base, None)
            out.extend("    " + l for l in para)
            out.append("")
            prose_base = base
            i = j
            continue
        if deeper:
            k = deeper[0]
            end = k
            while end < len(para) and _indent(para[end]) > base:
                end += 1
            out.extend(_escape(l) for l in para[:k])
            _open_literal(out, base, len(out) - 1)
            out.extend(para[k:end])
            out.append("")
            prose_base = base
            i += end                     # the rest of the paragraph is read again
            continue

        out.extend(_escape(l) for l in para)
        prose_base = base
        if para[-1].rstrip().endswith("::"):
            body_of = base
        i = j
    lines[:] = out


def _process(app, what, name, obj, options, lines):
    literal_blocks(lines)


def setup(app):
    # Before napoleon (priority 500), which turns numpy-style sections into fields.
    app.connect("autodoc-process-docstring", _process, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
