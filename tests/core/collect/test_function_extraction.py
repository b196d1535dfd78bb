"""Function definitions read with tree-sitter from real C and C++ files: names, texts, lines."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from streamguard_core.collect.functions import (
    choose_language,
    code_tokens,
    extract_file_functions,
    extract_functions,
    language_for,
)

OSSFUZZ = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ossfuzz_fixes.jsonl.gz"

C_ADD = """static int add(int a, int b)
{
    return a + b; /* inline comment */
}"""
C_DUP = "char *dup_str(const char *s) { return s ? strdup(s) : NULL; }"
C_KR = """int old_style(a, b)
    int a;
    char *b;
{
    return a + (b != 0);
}"""
C_HANDLER = "void (*get_handler(int sig))(int) { return handlers[sig]; }"
C_PLAT_A = "int plat(void) { return 1; }"
C_PLAT_B = "int plat(void) { return 2; }"
C_FILE = f"""#include <stdio.h>
#include <string.h>

/* adds two numbers */
{C_ADD}

{C_DUP}

{C_KR}

static void (*handlers[4])(int);
{C_HANDLER}

#ifdef HAVE_X
{C_PLAT_A}
#else
{C_PLAT_B}
#endif
struct point {{ int x, y; }};
"""

CPP_PARSE = """bool Layer::parse(const uint8_t* data, size_t len)
{
    if (len < sizeof(header)) return false;
    return true;
}"""
CPP_DTOR = "Layer::~Layer() { delete[] m_Data; }"
CPP_ASSIGN = "Layer& Layer::operator=(const Layer& other) { copy(other); return *this; }"
CPP_CALL = "bool operator()(char c) const { return c == m_Char; }"
CPP_CAST = "operator bool() const { return m_Ok; }"
CPP_GET = "const T& get() const { return m_Value; }"
CPP_DEFAULT = "virtual ~Holder() = default;"
CPP_TEMPLATE = "T max_of(T a, T b) { return a < b ? b : a; }"
CPP_CFUN = "int c_entry(void) { return 0; }"
CPP_ANON = "static int helper(int x) { return x * 2; }"
CPP_NESTED = "void Inner::run() {}"
CPP_TRY = "void Session::close() try { flush(); } catch (...) { }"
CPP_FILE = f"""#include "layer.h"

namespace pcpp {{

// parses a header
{CPP_PARSE}

{CPP_DTOR}

{CPP_ASSIGN}

struct is_any_of {{
    {CPP_CALL}
    char m_Char;
}};

template <typename T>
class Holder {{
public:
    {CPP_CAST}
    {CPP_GET}
    {CPP_DEFAULT}
private:
    T m_Value;
    bool m_Ok;
}};

}}  // namespace pcpp

template <typename T>
{CPP_TEMPLATE}

extern "C" {{
{CPP_CFUN}
}}

namespace {{
{CPP_ANON}
}}

namespace outer::mid {{
{CPP_NESTED}
}}

{CPP_TRY}
"""


def _by_name(text: str, language: str) -> dict[str, list[str]]:
    defs, _ = extract_functions(text, language)
    out: dict[str, list[str]] = {}
    for d in defs:
        out.setdefault(d.name, []).append(d.text)
    return out


def test_language_for_suffixes() -> None:
    assert language_for("lib/url.c") == "c"
    assert language_for("include/Foo.H") == "c"
    for path in ("a.cc", "a.cpp", "a.cxx", "a.c++", "a.hpp", "a.hh", "a.hxx"):
        assert language_for(path) == "cpp", path
    assert language_for("README.md") is None
    assert language_for("Makefile") is None


def test_c_file_names_texts_and_lines() -> None:
    defs, had_errors = extract_functions(C_FILE, "c")
    assert not had_errors
    assert [d.name for d in defs] == ["add", "dup_str", "old_style", "get_handler", "plat", "plat"]
    assert [d.text for d in defs] == [C_ADD, C_DUP, C_KR, C_HANDLER, C_PLAT_A, C_PLAT_B]
    lines = C_FILE.splitlines()
    for d in defs:
        assert not d.has_error
        # the reported lines hold the definition's first and last line
        assert lines[d.start_line - 1].startswith(d.text.splitlines()[0])
        assert lines[d.end_line - 1].endswith(d.text.splitlines()[-1])
    add = defs[0]
    assert (add.start_line, add.end_line) == (5, 8)
    assert add.body.startswith("{") and add.body.endswith("}")
    assert add.text.startswith("static int add")  # no preceding comment
    # the two #ifdef variants share a name and a declarator: only their bodies differ
    assert defs[4].signature == defs[5].signature == "plat(void)"


def test_cpp_qualified_names() -> None:
    names = _by_name(CPP_FILE, "cpp")
    assert names == {
        "pcpp::Layer::parse": [CPP_PARSE],
        "pcpp::Layer::~Layer": [CPP_DTOR],
        "pcpp::Layer::operator=": [CPP_ASSIGN],
        "pcpp::is_any_of::operator()": [CPP_CALL],
        "pcpp::Holder::operator bool": [CPP_CAST],
        "pcpp::Holder::get": [CPP_GET],
        "pcpp::Holder::~Holder": [CPP_DEFAULT],
        "max_of": [CPP_TEMPLATE],  # the text starts after the template<...> line
        "c_entry": [CPP_CFUN],
        "helper": [CPP_ANON],  # an anonymous namespace adds no name
        "outer::mid::Inner::run": [CPP_NESTED],
        "Session::close": [CPP_TRY],
    }


def test_operator_names_are_normalized() -> None:
    text = "void* Pool::operator new [] (size_t n) { return alloc(n); }\n"
    text += "Pool::operator  unsigned   int() const { return 0; }\n"
    assert list(_by_name(text, "cpp")) == ["Pool::operator new[]", "Pool::operator unsigned int"]


def test_function_bodies_are_not_searched_and_macro_heads_are_skipped() -> None:
    text = """int outer(void)
{
    struct local { int f; };
    return 0;
}
DEFINE_HANDLER(name)
{
    return 1;
}
"""
    defs, _ = extract_functions(text, "c")
    assert [d.name for d in defs] == ["outer"]


def test_parse_errors_are_reported() -> None:
    broken = "int ok(void) { return 1; }\n@@ this is not C {{{ ((( \n"
    defs, had_errors = extract_functions(broken, "c")
    assert had_errors
    assert [d.name for d in defs] == ["ok"]
    defs, had_errors = extract_functions("%%% ))) not code at all {{", "c")
    assert had_errors and defs == []


def test_header_read_as_cpp_only_when_c_fails() -> None:
    c_header = "static inline int buf_len(const struct buf *b) { return b ? b->len : 0; }\n"
    cpp_header = """namespace media {
class Frame {
public:
    int width() const { return m_Width; }
private:
    int m_Width;
};
}
"""
    assert choose_language("include/buf.h", c_header) == "c"
    assert choose_language("include/frame.h", cpp_header) == "cpp"
    assert choose_language("src/frame.c", cpp_header) == "c"  # only a .h may switch
    defs, had_errors, language = extract_file_functions("include/frame.h", cpp_header)
    assert (language, had_errors) == ("cpp", False)
    assert [d.name for d in defs] == ["media::Frame::width"]
    assert extract_file_functions("docs/notes.txt", cpp_header) == ([], False, None)


def test_invalid_utf8_and_non_ascii_text_round_trips() -> None:
    raw = "int f(void) { return 0; /* caf\u00e9 \ufffd */ }\nint g(void) { return 1; }\n"
    defs, _ = extract_functions(raw, "c")
    assert [d.text for d in defs] == [
        "int f(void) { return 0; /* caf\u00e9 \ufffd */ }",
        "int g(void) { return 1; }",
    ]
    assert defs[1].start_line == 2


def test_code_tokens_ignores_comments_and_layout_only() -> None:
    a = "int f(int x) {\n  return x + 1; // one\n}"
    b = "int f(int x)\n{\n\treturn x+1; /* one more */\n}"
    assert code_tokens(a) == code_tokens(b)
    assert code_tokens(a) != code_tokens("int f(int x) { return x + 2; }")
    assert code_tokens('puts("a b");') != code_tokens('puts("ab");')  # literal spaces count


@pytest.mark.skipif(not OSSFUZZ.exists(), reason="shared OSS-Fuzz data not present")
def test_ossfuzz_rows_give_their_function() -> None:
    with gzip.open(OSSFUZZ, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    sample = random.Random(0).sample(rows, 400)
    # every C++-ish and header row too: they exercise operators, destructors and `= default`
    sample += [r for r in rows if not r["file"].endswith(".c")][:400]
    for row in sample:
        language = choose_language(row["file"], row["func"])
        defs, _ = extract_functions(row["func"], language)
        assert len(defs) == 1, (row["function"], row["file"])
        unqualified = row["function"].split("::")[-1]
        assert defs[0].name.split("::")[-1] == unqualified, (row["function"], defs[0].name)
        assert defs[0].text == row["func"]
