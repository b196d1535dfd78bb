"""Code normalisation for duplicate detection: comments, whitespace, identifiers, literals."""

from __future__ import annotations

import hashlib
import re

C_KEYWORDS = frozenset(
    [
        "auto",
        "break",
        "case",
        "char",
        "const",
        "continue",
        "default",
        "do",
        "double",
        "else",
        "enum",
        "extern",
        "float",
        "for",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "register",
        "restrict",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "struct",
        "switch",
        "typedef",
        "union",
        "unsigned",
        "void",
        "volatile",
        "while",
        "_Bool",
        "bool",
        "true",
        "false",
        "NULL",
        "nullptr",
        "class",
        "namespace",
        "template",
        "typename",
        "public",
        "private",
        "protected",
        "virtual",
        "operator",
        "new",
        "delete",
        "this",
        "throw",
        "try",
        "catch",
        "using",
        "friend",
        "explicit",
        "mutable",
        "constexpr",
        "static_cast",
        "dynamic_cast",
        "reinterpret_cast",
        "const_cast",
        "noexcept",
        "override",
        "final",
        "size_t",
        "uint8_t",
        "uint16_t",
        "uint32_t",
        "uint64_t",
        "int8_t",
        "int16_t",
        "int32_t",
        "int64_t",
    ]
)

# One pass over the source: comments and string/char literals must be matched before anything
# inside them is read as code.
_TOKEN_RE = re.compile(
    r"""
    (?P<comment>//[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<directive>\#[ \t]*[A-Za-z_]\w*)
  | (?P<string>"(?:\\.|[^"\\\n])*"?)
  | (?P<char>'(?:\\.|[^'\\\n])*'?)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)[uUlLfF]*)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def strip_comments_whitespace(func: str) -> str:
    """Source with comments removed and every whitespace run collapsed to one space."""
    parts: list[str] = []
    for m in _TOKEN_RE.finditer(func):
        kind = m.lastgroup
        if kind == "comment" or kind == "space":
            if parts and parts[-1] != " ":
                parts.append(" ")
        else:
            parts.append(m.group())
    return "".join(parts).strip()


def normalize_code(func: str) -> str:
    """Normalised form: no comments or layout, identifiers -> ID, literals -> NUM/STR/CHR.

    C/C++ keywords and builtin type names are kept, so ``if (n < 10)`` and ``while (n < 10)``
    stay different while ``if (len < 64)`` and ``if (size < 128)`` become equal.
    """
    out: list[str] = []
    for m in _TOKEN_RE.finditer(func):
        kind = m.lastgroup
        if kind == "comment" or kind == "space":
            continue
        text = m.group()
        if kind == "ident":
            out.append(text if text in C_KEYWORDS else "ID")
        elif kind == "number":
            out.append("NUM")
        elif kind == "string":
            out.append("STR")
        elif kind == "char":
            out.append("CHR")
        elif kind == "directive":
            out.append("#" + text[1:].strip())
        else:
            out.append(text)
    # Joined without separators so that the tree-sitter leaf walk (which sees "->" as one
    # token) and this regex (which sees "-" ">") give the same string.
    return "".join(out)


def exact_key(func: str) -> str:
    """Hash of the text with only surrounding whitespace and line-end style ignored."""
    text = func.replace("\r\n", "\n").strip()
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def normalized_key(func: str) -> str:
    """Hash of :func:`normalize_code`."""
    return hashlib.blake2b(
        normalize_code(func).encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()
