"""Named function definitions of a C/C++ file, read with tree-sitter.

Every ``function_definition`` is found (C++ ``= default``/``= delete`` ones too), also inside
namespaces, classes and structs, ``extern "C"`` blocks, templates, preprocessor blocks and
parse-error nodes (but not inside another function's body). Its name is read from the
declarator (through pointer, reference, parenthesized and function declarators; qualified
identifiers, destructors, operators and conversion operators) and qualified with the enclosing
named namespaces and classes, joined by ``::`` (``pcpp::Layer::parse``; a C function is its
plain name). A definition whose name cannot be read from its declarator (a head made by a macro
that the parser splits wrongly) is left out.

The text is the definition exactly as in the file: from the first token of its return type (or
specifiers) to the closing brace; no preceding comment or ``template<...>`` line. This is the
extraction of the shared OSS-Fuzz data (``../shared/data/README.md`` sections 3 and 4).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath

import tree_sitter

from streamguard_core.data.normalize import _TOKEN_RE
from streamguard_core.preprocess.parse import LANGUAGES

C_SUFFIXES = frozenset([".c", ".h"])
CPP_SUFFIXES = frozenset([".cc", ".cpp", ".cxx", ".c++", ".hpp", ".hh", ".hxx"])

# Declarators that wrap the declared name (the name is in their `declarator` field or, for the
# C++ reference declarator and C parenthesized declarator, their last named child).
_WRAPPERS = frozenset(
    [
        "pointer_declarator",
        "reference_declarator",
        "parenthesized_declarator",
        "attributed_declarator",
        "function_declarator",
    ]
)
_PLAIN_NAMES = frozenset(["identifier", "field_identifier", "type_identifier", "template_function"])
_NAMES = _PLAIN_NAMES | {
    "operator_name",
    "destructor_name",
    "operator_cast",
    "qualified_identifier",
}
_DECLARATORS = _WRAPPERS | _NAMES
_SCOPES = frozenset(["class_specifier", "struct_specifier", "union_specifier"])
_SPACE_RE = re.compile(r"\s+")
# A space survives in a name only between two word characters (`operator new`, `unsigned int`).
_INNER_SPACE_RE = re.compile(r"(?<=\W) | (?=\W)")


@dataclass(frozen=True, slots=True)
class FunctionDef:
    """One function definition of a file.

    ``signature`` is the declarator without comments and whitespace (it tells overloads apart);
    ``body_start`` is the offset of the body in ``text`` (characters).
    """

    name: str
    text: str
    start_line: int
    end_line: int
    has_error: bool
    signature: str = ""
    body_start: int = 0

    @property
    def body(self) -> str:
        """The body: from its opening brace (``try``, ``= default``) to the end."""
        return self.text[self.body_start :]


def language_for(path: str) -> str | None:
    """Grammar of a file by its suffix: ``c`` (``.c .h``), ``cpp`` (C++ suffixes) or None.

    A ``.h`` file is ``c`` here; :func:`extract_file_functions` reads it as C++ when the C grammar
    cannot parse it and the C++ grammar parses it with fewer errors.
    """
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in C_SUFFIXES:
        return "c"
    if suffix in CPP_SUFFIXES:
        return "cpp"
    return None


def code_tokens(text: str) -> str:
    """The text without comments and without any whitespace outside literals (change test)."""
    return "".join(
        m.group() for m in _TOKEN_RE.finditer(text) if m.lastgroup not in ("comment", "space")
    )


def clean_name(text: str) -> str:
    """A name's text with whitespace collapsed and kept only between two word characters."""
    return _INNER_SPACE_RE.sub("", _SPACE_RE.sub(" ", text.strip()))


_local = threading.local()


def _parser(language: str) -> tree_sitter.Parser:
    """A tree-sitter parser per thread and grammar (parsers are not thread-safe)."""
    parsers: dict[str, tree_sitter.Parser] | None = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    if language not in parsers:
        if language not in LANGUAGES:
            raise ValueError(f"language must be one of {sorted(LANGUAGES)}, got {language!r}")
        parsers[language] = tree_sitter.Parser(LANGUAGES[language])
    return parsers[language]


def _text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def _name(node: tree_sitter.Node) -> tuple[str, bool] | None:
    """A name node's text and whether it is a conversion operator (None: not a name)."""
    kind = node.type
    if kind in _PLAIN_NAMES or kind == "operator_name":
        return clean_name(_text(node)), False
    if kind == "destructor_name":
        return "~" + clean_name(_text(node)).lstrip("~"), False
    if kind == "operator_cast":
        target = node.child_by_field_name("type")
        return ("operator " + clean_name(_text(target)), True) if target is not None else None
    if kind == "qualified_identifier":
        inner = node.child_by_field_name("name")
        named = _name(inner) if inner is not None else None
        if named is None:
            return None
        scope = node.child_by_field_name("scope")
        if scope is None:  # `::f`
            return named
        return f"{clean_name(_text(scope))}::{named[0]}", named[1]
    return None


def _declarator_name(node: tree_sitter.Node | None) -> str | None:
    """The (possibly qualified) name a function definition's declarator declares, or None.

    The way from the declarator to the name must pass through a function declarator (or end at a
    conversion operator, which holds its own parameter list): a bare identifier there is a head
    made by a macro that the parser split wrongly.
    """
    is_function = False
    while node is not None and node.type in _WRAPPERS:
        is_function = is_function or node.type == "function_declarator"
        inner = node.child_by_field_name("declarator")
        if inner is None:  # reference/parenthesized/attributed declarators have no field name
            inner = next((c for c in node.named_children if c.type in _DECLARATORS), None)
        node = inner
    named = _name(node) if node is not None else None
    if named is None or not (is_function or named[1]):
        return None
    return named[0]


def _scope_name(node: tree_sitter.Node) -> str | None:
    """The name a namespace or class adds to the qualified names inside it (None: anonymous)."""
    if node.type == "namespace_definition" or (
        node.type in _SCOPES and node.child_by_field_name("body") is not None
    ):
        name = node.child_by_field_name("name")
        return clean_name(_text(name)) if name is not None else None
    return None


def _function(node: tree_sitter.Node, src: bytes, scope: list[str]) -> FunctionDef | None:
    """The :class:`FunctionDef` of a ``function_definition`` node (None: no readable name)."""
    declarator = node.child_by_field_name("declarator")
    if declarator is None:
        return None
    # A defaulted or deleted definition (`~A() = default;`) has its clause where the body is.
    body = node.child_by_field_name("body") or node.named_children[-1]
    name = _declarator_name(declarator)
    if not name:
        return None
    name = name.removeprefix("::")
    start, end = node.start_byte, node.end_byte
    text = src[start:end].decode("utf-8", "replace")
    return FunctionDef(
        name="::".join([*scope, name]),
        text=text,
        start_line=node.start_point.row + 1,
        end_line=node.end_point.row + 1,
        has_error=node.has_error,
        signature=code_tokens(_text(declarator)),
        body_start=len(src[start : body.start_byte].decode("utf-8", "replace")),
    )


def _walk(tree: tree_sitter.Tree, src: bytes) -> list[FunctionDef]:
    """Depth-first cursor walk collecting function definitions with their enclosing scopes."""
    found: list[FunctionDef] = []
    cursor = tree.walk()
    scope: list[str] = []
    scope_depth: list[int] = []  # depth of the node that pushed each scope entry
    depth = 0
    while True:
        node = cursor.node
        descend = True
        if node is not None:
            if node.type == "function_definition":
                func = _function(node, src, scope)
                if func is not None:
                    found.append(func)
                descend = False
            else:
                name = _scope_name(node)
                if name:
                    scope.append(name)
                    scope_depth.append(depth)
        if descend and cursor.goto_first_child():
            depth += 1
            continue
        while True:
            while scope_depth and scope_depth[-1] >= depth:
                scope.pop()
                scope_depth.pop()
            if cursor.goto_next_sibling():
                break
            if not cursor.goto_parent():
                return found
            depth -= 1


def error_size(tree: tree_sitter.Tree) -> int:
    """How broken a parse is: bytes inside ERROR nodes plus one per MISSING node."""
    if not tree.root_node.has_error:
        return 0
    size = 0
    cursor = tree.walk()
    while True:
        node = cursor.node
        descend = node is not None and node.has_error
        if node is not None and node.is_error:
            size += node.end_byte - node.start_byte
            descend = False
        elif node is not None and node.is_missing:
            size += 1
        if descend and cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return size


def parse(text: str, language: str) -> tuple[tree_sitter.Tree, bytes]:
    """The tree-sitter tree of a source text and the UTF-8 bytes it was parsed from."""
    src = text.encode("utf-8", "surrogatepass")
    return _parser(language).parse(src), src


def extract_functions(text: str, language: str) -> tuple[list[FunctionDef], bool]:
    """Named function definitions of one source text, in file order.

    Args:
        text: the file's text.
        language: ``c`` or ``cpp``.

    Returns:
        The definitions and whether the file had parse errors.
    """
    tree, src = parse(text, language)
    return _walk(tree, src), tree.root_node.has_error


def choose_language(path: str, *texts: str) -> str | None:
    """The grammar for a file: by suffix, and for a ``.h`` C++ when C fails and C++ fails less.

    Several texts (the versions of one file) are judged together, so both versions of a
    changed file are read with the same grammar.
    """
    language = language_for(path)
    if language != "c" or PurePosixPath(path).suffix.lower() != ".h":
        return language
    c_errors = sum(error_size(parse(t, "c")[0]) for t in texts)
    if c_errors == 0:
        return "c"
    cpp_errors = sum(error_size(parse(t, "cpp")[0]) for t in texts)
    return "cpp" if cpp_errors < c_errors else "c"


def extract_file_functions(path: str, text: str) -> tuple[list[FunctionDef], bool, str | None]:
    """Definitions of one file read with :func:`choose_language`: (defs, had errors, language).

    A file that is not C/C++ by its suffix gives ``([], False, None)``.
    """
    language = choose_language(path, text)
    if language is None:
        return [], False, None
    defs, had_errors = extract_functions(text, language)
    return defs, had_errors, language
