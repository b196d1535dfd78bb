"""Seeded, offline synthetic collector: paired vulnerable/fixed C functions per CWE family.

Each pair is one template rendered twice from the same memoised random draws, so the two
variants differ only by the flaw and its repair. Identifiers, constants, control-flow shape and
benign noise statements are randomised so that neither names nor layout reveal the label, and
so that normalised (identifier/literal-abstracted) forms rarely repeat across pairs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from streamguard_core.schema import FunctionRecord

__all__ = ["SYNTHETIC_CWES", "generate_synthetic"]

_T = TypeVar("_T")

SYNTHETIC_CWES: tuple[str, ...] = (
    "CWE-78",
    "CWE-120",
    "CWE-121",
    "CWE-122",
    "CWE-125",
    "CWE-134",
    "CWE-190",
    "CWE-369",
    "CWE-401",
    "CWE-415",
    "CWE-416",
    "CWE-476",
    "CWE-787",
)

# ---------------------------------------------------------------------------------------------
# Name pools. None of these may contain a label-revealing word (bad, good, vul, fix, safe, flaw,
# cwe); the tests scan every generated function for them.
# ---------------------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_POOLS: dict[str, tuple[str, ...]] = {
    "buf": _words(
        "buf dst out tmp dest line scratch work outbuf text msg local storage copy field "
        "staging area"
    ),
    "src": _words(
        "src input user_input name arg str value in data payload s token label text_in raw "
        "origin param"
    ),
    "len": _words("len n size count nbytes length sz total cnt want avail nread amount"),
    "idx": _words("idx pos off slot index at which sel id num entry_no"),
    "i": _words("i j k ii cur n_done step u"),
    "ptr": _words("p ptr obj node item entry rec elem it e"),
    "ctx": _words("ctx conn sess state dev self handle priv sc h pd"),
    "pkt": _words("pkt hdr msg frame req packet rec chunk blk pdu"),
    "path": _words("path fname filename file dir dirname base target where"),
    "cmd": _words("cmd command cmdline shell_cmd line argbuf exec_buf cbuf"),
    "host": _words("host hostname addr server target peer user domain query"),
    "fd": _words("fd sock sockfd infd conn_fd desc chan"),
    "fp": _words("fp f stream infile src_fp input_fp rd"),
    "val": _words("value val v x byte word b ch datum w c"),
    "rc": _words("rc ret err status res result r"),
    "sum": _words("sum acc total accum running agg"),
    "count": _words("count n num nitems nelem cnt entries length nvals"),
    "width": _words("width w cols ncols x_res"),
    "height": _words("height h rows nrows y_res"),
    "key": _words("key name k ident lookup id_str tagname"),
    "pid": _words("pid child cpid worker kid"),
    "t_from": _words("start t_begin since t_start first_ms"),
    "t_to": _words("end t_end until now_ts t_stop last_ms"),
}

_DECOR_SUFFIX = _words("2 1 _ _p _cur _tmp _in _v 0 _a _x")
_DECOR_PREFIX = _words("my_ l_ cur_ the_ tmp_ raw_ p_")

# Empty module prefixes are repeated so that unprefixed names stay the most common.
_FUNC_MODULES = (
    "",
    "",
    "",
    *_words(
        "net_ io_ cfg_ usb_ http_ img_ db_ proto_ dev_ fs_ srv_ xml_ json_ ipc_ snd_ drv_ ui_ "
        "cache_ auth_"
    ),
)
_FUNC_VERBS = _words(
    "copy parse read load handle process decode build format store fetch update append emit "
    "init apply scan pack unpack convert render dispatch extract prepare set get register "
    "resolve"
)
_FUNC_NOUNS = _words(
    "packet header record entry name path message frame token field config buffer request "
    "reply item chunk block label string payload attr option sample row cell node key image"
)
_FUNC_TAILS = ("", "", "", "", *_words("_impl _internal _v2 _ex _cb _locked _one"))

# External helpers, by role, so that a call reads like what it does.
_CALLEES: dict[str, tuple[str, ...]] = {
    "sink": _words(
        "process_line handle_token emit_record store_value send_reply update_cache "
        "forward_msg commit_entry push_event consume dispatch submit publish queue_item "
        "apply_config register_name write_out deliver flush_out finish_request use_data "
        "hand_off enqueue"
    ),
    "find": _words("find_entry lookup table_get hash_find get_by_name find_slot map_lookup"),
    "hash": _words("hash_str djb2 fnv1a hash_key str_hash compute_hash"),
    "fill": _words("fill_buffer read_all fetch_into recv_all read_block load_chunk"),
    "load": _words("load_file read_config slurp_file read_whole load_blob"),
    "open": _words("open_file load_path stat_path open_target check_access"),
    "rel": _words("release_ref unregister_req detach drop_ref unlink_req"),
}

_STRUCT_TAGS = _words(
    "packet pkt_hdr conn session request message frame device parser table node item sbuf "
    "strbuf vec config context job client stream blob list_node dev_state io_ctx store"
)

_SIZE_MACROS = _words(
    "BUF_SIZE MAX_LEN NAME_LEN LINE_LEN PATH_LEN MSG_SIZE TMP_LEN HDR_MAX MAX_FIELD FIELD_LEN "
    "REC_SIZE MAX_ITEMS NSLOTS TABLE_SIZE"
)
_SIZE_VALUES = (8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 100, 128, 200, 255, 256, 260, 512)

_ERR_CODES = _words("-1 -1 -1 -EINVAL -ERANGE E_RANGE STATUS_ERROR -EIO")

_GLOBAL_INTS = _words(
    "g_calls debug_level trace_mask stat_requests n_invocations total_ops g_mode log_level "
    "op_count g_verbose g_generation retry_budget"
)
_GLOBAL_STRUCTS = _words("g_stats metrics counters perf g_diag")
_GLOBAL_FIELDS = _words("calls errors bytes_in hits misses events lookups")
_NOISE_LOCALS = _words(
    "t0 tick hval retries stamp seq cookie level attempt nspins epoch mask lvl spin tries "
    "ticks gen trace_id marker phase"
)
_LOG_FUNCS = _words("log_debug LOG_DEBUG dbg_printf trace_msg pr_debug log_trace")
_LOG_WORDS = ("enter", "start", "begin", "checking input", "processing", "entry", "called")
_COMMENTS = (
    "/* caller holds the table lock */",
    "// keep in sync with the protocol header",
    "/* hot path: avoid extra allocations */",
    "/* TODO: make this configurable */",
    "// statistics only",
    "/* see RFC 1035, section 4.1 */",
    "// legacy behaviour, do not change",
    "/* XXX: revisit once the new parser lands */",
    "// cheap sanity check",
    "/* values come from the wire */",
    "// matches the on-disk layout",
    "/* called from the event loop */",
)


class _Draw:
    """Memoised random choices shared by both variants of one pair.

    The vulnerable variant is always rendered first; every draw is memoised under a key, so the
    fixed variant sees the same names, constants and shapes, and draws only for what it adds.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._memo: dict[str, object] = {}
        self.used: set[str] = set()

    def memo(self, key: str, make: Callable[[], _T]) -> _T:
        """make() on the first call for key, the stored value afterwards."""
        if key not in self._memo:
            self._memo[key] = make()
        return cast(_T, self._memo[key])

    def choice(self, key: str, options: Sequence[str]) -> str:
        """Memoised choice among strings."""
        return self.memo(key, lambda: self.rng.choice(options))

    def randint(self, key: str, lo: int, hi: int) -> int:
        """Memoised integer in [lo, hi]."""
        return self.memo(key, lambda: self.rng.randint(lo, hi))

    def flag(self, key: str, prob: float = 0.5) -> bool:
        """Memoised coin flip."""
        return self.memo(key, lambda: self.rng.random() < prob)

    def fresh(self, pool: Sequence[str], decorate: float = 0.35) -> str:
        """A new identifier from pool, optionally decorated, unique within the function."""
        for _ in range(60):
            name = self.rng.choice(pool)
            if self.rng.random() < decorate:
                name += self.rng.choice(_DECOR_SUFFIX)
            elif self.rng.random() < decorate / 3:
                name = self.rng.choice(_DECOR_PREFIX) + name
            if name not in self.used:
                self.used.add(name)
                return name
        # Pools are much larger than any one function's needs; this only guards the loop.
        name = f"{self.rng.choice(pool)}_{len(self.used)}"
        self.used.add(name)
        return name

    def name(self, key: str, pool: str | None = None) -> str:
        """Memoised local/parameter name for a role (pool defaults to the key)."""
        return self.memo("name:" + key, lambda: self.fresh(_POOLS[pool or key]))

    def func(self) -> str:
        """Memoised function name."""

        def make() -> str:
            r = self.rng
            name = r.choice(_FUNC_MODULES) + r.choice(_FUNC_VERBS) + "_" + r.choice(_FUNC_NOUNS)
            name += r.choice(_FUNC_TAILS)
            self.used.add(name)
            return name

        return self.memo("func", make)

    def callee(self, key: str) -> str:
        """Memoised name of an external helper the function calls (key names its role)."""

        def make() -> str:
            pool = _CALLEES[key]
            name = self.rng.choice(_FUNC_MODULES) + self.rng.choice(pool)
            while name in self.used:
                name = self.rng.choice(_FUNC_MODULES) + self.rng.choice(pool) + "2"
            self.used.add(name)
            return name

        return self.memo("callee:" + key, make)

    def tag(self, key: str) -> str:
        """Memoised struct tag (tags live in their own namespace, so no uniqueness needed)."""
        return self.choice("tag:" + key, _STRUCT_TAGS)

    def field(self, key: str, options: Sequence[str]) -> str:
        """Memoised struct member name (members live in their own namespace too)."""
        return self.choice("field:" + key, options)

    def size(self, key: str, lo: int = 8) -> str:
        """Memoised array size: a literal or a macro name (changes the normalised shape)."""
        if self.flag("sizemacro:" + key, 0.35):
            return self.choice("sizem:" + key, _SIZE_MACROS)
        return self.choice("sizev:" + key, [str(v) for v in _SIZE_VALUES if v >= lo])

    def err(self) -> str:
        """Memoised error return value for int-returning functions."""
        return self.choice("err", _ERR_CODES)


# Marks a place in a function body where benign noise statements may be inserted.
_SLOT = object()


@dataclass(slots=True)
class _Fn:
    ret: str
    params: list[str]
    items: list[object]


def _indent(text: str, levels: int = 1) -> str:
    pad = "    " * levels
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def _block(lines: Sequence[str]) -> str:
    return "{\n" + "\n".join(_indent(line) for line in lines) + "\n}"


def _if(p: _Draw, cond: str, body: str | Sequence[str]) -> str:
    """An if statement in the function's (memoised) brace style."""
    lines = [body] if isinstance(body, str) else list(body)
    style = p.choice("ifstyle", ("brace", "brace", "bare"))
    if len(lines) == 1 and "\n" not in lines[0] and style == "bare":
        return f"if ({cond})\n    {lines[0]}"
    return f"if ({cond}) " + _block(lines)


def _loop(p: _Draw, key: str, var: str, start: str, cond: str, body: Sequence[str]) -> str:
    """A counting loop as for or while (memoised per key); var must already be declared."""
    if p.choice("loop:" + key, ("for", "for", "while")) == "for":
        return f"for ({var} = {start}; {cond}; {var}++) " + _block(body)
    return f"{var} = {start};\nwhile ({cond}) " + _block([*body, f"{var}++;"])


# ---------------------------------------------------------------------------------------------
# Benign noise: statements with no bearing on the flaw, identical in both variants of a pair.
# They reference only their own fresh locals or external globals, so they are valid anywhere.
# ---------------------------------------------------------------------------------------------


def _noise(p: _Draw) -> str:
    r = p.rng
    g = r.choice(_GLOBAL_INTS)
    gs, gf = r.choice(_GLOBAL_STRUCTS), r.choice(_GLOBAL_FIELDS)
    num = r.choice((1, 2, 3, 4, 5, 7, 8, 16, 31, 64, 100))
    kind = r.randrange(17)
    if kind == 0:
        fn, word = r.choice(_LOG_FUNCS), r.choice(_LOG_WORDS)
        form = r.randrange(3)
        if form == 0:
            stmt = f'{fn}("{word}");'
        elif form == 1:
            stmt = f'{fn}("%s: {word}\\n", __func__);'
        else:
            stmt = f'{fn}("%s:%d {word}", __func__, __LINE__);'
    elif kind == 1:
        stmt = r.choice((f"{g}++;", f"++{g};", f"{g} += {num};", f"{gs}.{gf}++;"))
    elif kind == 2:
        v = p.fresh(_NOISE_LOCALS, 0.2)
        ty = r.choice(("int", "unsigned int", "long", "size_t", "unsigned char"))
        stmt = f"{ty} {v} = {num};"
        stmt += r.choice(("", f"\n(void){v};", f"\n{v} += {g};\n(void){v};"))
    elif kind == 3:
        v = p.fresh(_NOISE_LOCALS, 0.2)
        stmt = f"unsigned int {v} = {5381 + num}u;\n"
        stmt += r.choice((f"{v} = (({v} << 5) + {v}) ^ {num}u;", f"{v} ^= {v} >> {num % 7 + 1};"))
        stmt += f"\n(void){v};"
    elif kind == 4:
        stmt = r.choice(
            (
                f"assert({g} >= 0);",
                f"assert(sizeof(long) >= {num % 4 + 4});",
                f"assert({gs}.{gf} >= 0);",
            )
        )
    elif kind == 5:
        msg = r.choice(_LOG_WORDS)
        body = r.choice((f'fprintf(stderr, "%s: {msg}\\n", __func__);', f"{gs}.{gf}++;"))
        stmt = f"if ({g} > {num}) " + _block([body])
    elif kind == 6:
        v = p.fresh(_NOISE_LOCALS, 0.2)
        if r.random() < 0.5:
            stmt = f"for (int {v} = 0; {v} < {num % 5 + 2}; {v}++) " + _block([f"{g} ^= {v};"])
        else:
            stmt = f"int {v} = {num % 5 + 2};\nwhile ({v}-- > 0) " + _block(["cpu_relax();"])
    elif kind == 7:
        v = p.fresh(_NOISE_LOCALS, 0.2)
        if r.random() < 0.5:
            stmt = f"long {v} = now_ms();\n(void){v};"
        else:
            stmt = f"struct timespec {v};\nclock_gettime(CLOCK_MONOTONIC, &{v});"
    elif kind == 8:
        stmt = r.choice(("errno = 0;", f"{g} = 0;"))
    elif kind == 9:
        stmt = r.choice(_COMMENTS)
    elif kind == 10:
        v = p.fresh(_NOISE_LOCALS, 0.2)
        tag = r.choice(("stats", "op_stats", "probe", "sample_info"))
        stmt = f"struct {tag} {v};\nmemset(&{v}, 0, sizeof({v}));"
        if r.random() < 0.5:
            stmt += f"\n{v}.{gf} = {num};"
    elif kind == 11:
        g2 = r.choice(_GLOBAL_INTS)
        stmt = f"switch ({g}) {{\ncase {num}:\n    {g2}++;\n    break;\ndefault:\n    break;\n}}"
    elif kind == 12:
        stmt = "do " + _block([f"{g}++;"]) + " while (0);"
    elif kind == 13:
        v = p.fresh(_NOISE_LOCALS, 0.2)
        stmt = f"int {v} = {g} ? {num} : {num + 1};\n(void){v};"
    elif kind == 14:
        v = p.fresh(_NOISE_LOCALS, 0.2)
        word = r.choice(("io", "net", "core", "parser", "cache", "main"))
        if r.random() < 0.5:
            stmt = f'static const char {v}[] = "{word}";\n(void){v};'
        else:
            stmt = f'const char *{v} = "{word}";\n(void){v};'
    elif kind == 15:
        lock = r.choice(("g_lock", "stats_lock", "table_mutex", "cfg_lock"))
        stmt = f"pthread_mutex_lock(&{lock});\n{gs}.{gf}++;\npthread_mutex_unlock(&{lock});"
    else:
        stmt = f"{r.choice(('metrics_inc', 'stat_bump', 'counter_add'))}({g.upper()}, {num});"
    if kind != 9 and r.random() < 0.15:
        stmt = r.choice(_COMMENTS) + "\n" + stmt
    return stmt


def _noise_plan(p: _Draw, nslots: int) -> list[list[str]]:
    def make() -> list[list[str]]:
        plan: list[list[str]] = [[] for _ in range(nslots)]
        for _ in range(p.rng.randint(1, 4)):
            plan[p.rng.randrange(nslots)].append(_noise(p))
        return plan

    plan = p.memo("noise", make)
    if len(plan) != nslots:
        # A template bug: both variants must expose the same slots to share the noise.
        raise RuntimeError(f"noise slots differ between variants: {len(plan)} != {nslots}")
    return plan


def _render(p: _Draw, fn: _Fn) -> str:
    nslots = sum(1 for it in fn.items if it is _SLOT)
    plan = _noise_plan(p, nslots)
    lines: list[str] = []
    k = 0
    for it in fn.items:
        if it is _SLOT:
            lines.extend(plan[k])
            k += 1
        else:
            lines.append(str(it))
    params = list(fn.params) or ["void"]
    if len(params) > 1 and p.flag("pshuffle", 0.25):
        order = p.memo("porder", lambda: p.rng.sample(range(len(params)), len(params)))
        params = [params[j] for j in order]
    static = "static " if p.flag("static", 0.4) else ""
    sp = "" if fn.ret.endswith("*") else " "  # "char *f(...)", not "char * f(...)"
    head = f"{static}{fn.ret}{sp}{p.func()}({', '.join(params)})"
    sep = "\n" if p.flag("allman", 0.3) else " "
    return head + sep + _block(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Templates. Each takes the pair's draws and the variant, and returns the function parts.
# Checks that appear in both variants ("decoys") are deliberate: real code often validates
# something, just not the thing that matters.
# ---------------------------------------------------------------------------------------------


def _null_decoy(p: _Draw, ptr: str, ret: str) -> list[object]:
    if p.flag("nulldecoy", 0.4):
        return [_if(p, f"{ptr} == NULL" if p.flag("nullform") else f"!{ptr}", f"return {ret};")]
    return []


def _t120_strcpy(p: _Draw, vul: bool) -> _Fn:
    dst, src, err = p.name("buf"), p.name("src"), p.err()
    items: list[object] = [_SLOT, f"char {dst}[{p.size('n', 16)}];", *_null_decoy(p, src, err)]
    items.append(_SLOT)
    if vul:
        items.append(f"strcpy({dst}, {src});")
    else:
        style = p.choice("fixstyle", ("check", "snprintf", "strncpy"))
        if style == "check":
            items.append(_if(p, f"strlen({src}) >= sizeof({dst})", f"return {err};"))
            items.append(f"strcpy({dst}, {src});")
        elif style == "snprintf":
            items.append(f'snprintf({dst}, sizeof({dst}), "%s", {src});')
        else:
            items.append(
                f"strncpy({dst}, {src}, sizeof({dst}) - 1);\n{dst}[sizeof({dst}) - 1] = '\\0';"
            )
    items += [_SLOT, f"return {p.callee('sink')}({dst});"]
    return _Fn("int", [f"const char *{src}"], items)


def _t120_memcpy(p: _Draw, vul: bool) -> _Fn:
    buf, data, n, err = p.name("buf"), p.name("src"), p.name("len"), p.err()
    params = [f"const unsigned char *{data}", f"size_t {n}"]
    sink_args = f"{buf}, {n}"
    if p.flag("ctx"):
        ctx = p.name("ctx")
        params.insert(0, f"struct {p.tag('ctx')} *{ctx}")
        sink_args = f"{ctx}, {sink_args}"
    items: list[object] = [f"unsigned char {buf}[{p.size('n', 16)}];", _SLOT]
    items += _null_decoy(p, data, err)
    if not vul:
        if p.flag("clamp", 0.3):
            items.append(_if(p, f"{n} > sizeof({buf})", f"{n} = sizeof({buf});"))
        else:
            items.append(_if(p, f"{n} > sizeof({buf})", f"return {err};"))
    items += [f"memcpy({buf}, {data}, {n});", _SLOT, f"return {p.callee('sink')}({sink_args});"]
    return _Fn("int", params, items)


def _t120_strcat(p: _Draw, vul: bool) -> _Fn:
    path, d, f, err = p.name("path"), p.name("dir", "path"), p.name("src"), p.err()
    sep = p.choice("sep", ("/", "\\\\", ":", "."))
    items: list[object] = [f"char {path}[{p.size('n', 64)}];", _SLOT]
    if not vul:
        if p.flag("fixsnp"):
            # snprintf returns the length it wanted; a result >= size means truncation.
            k = p.name("n_wr", "len")
            items.append(f'int {k} = snprintf({path}, sizeof({path}), "%s{sep}%s", {d}, {f});')
            items.append(_if(p, f"{k} < 0 || (size_t){k} >= sizeof({path})", f"return {err};"))
            items += [_SLOT, f"return {p.callee('open')}({path});"]
            return _Fn("int", [f"const char *{d}", f"const char *{f}"], items)
        cond = f"strlen({d}) + strlen({f}) + 2 > sizeof({path})"
        items.append(_if(p, cond, f"return {err};"))
    items += [f"strcpy({path}, {d});", f'strcat({path}, "{sep}");', f"strcat({path}, {f});"]
    items += [_SLOT, f"return {p.callee('open')}({path});"]
    return _Fn("int", [f"const char *{d}", f"const char *{f}"], items)


def _t120_readline(p: _Draw, vul: bool) -> _Fn:
    line, fp, i, c = p.name("buf"), p.name("fp"), p.name("i"), p.name("val")
    getc = p.choice("getc", ("fgetc", "getc"))
    stop = p.choice("stop", ("'\\n'", "'\\0'", "';'"))
    items: list[object] = [
        f"char {line}[{p.size('n', 32)}];",
        f"{p.choice('ity', ('size_t', 'unsigned int', 'int'))} {i} = 0;",
        f"int {c};",
        _SLOT,
    ]
    cond = f"({c} = {getc}({fp})) != EOF && {c} != {stop}"
    body = [f"{line}[{i}++] = (char){c};"]
    if not vul:
        if p.flag("breakform"):
            body.insert(0, _if(p, f"{i} + 1 >= sizeof({line})", "break;"))
        else:
            cond += f" && {i} < sizeof({line}) - 1"
    items += [f"while ({cond}) " + _block(body), f"{line}[{i}] = '\\0';", _SLOT]
    items.append(f"return {p.callee('sink')}({line});")
    return _Fn("int", [f"FILE *{fp}"], items)


def _t_loop_bound(p: _Draw, vul: bool, heap: bool) -> _Fn:
    """Fill an array with a loop whose bound is off by one (<=) in the flawed variant."""
    arr, i = p.name("buf"), p.name("i")
    ety = p.choice("ety", ("int", "char", "unsigned int", "long", "short", "unsigned char"))
    op = "<=" if vul else "<"
    seed = p.name("val")
    rhs = p.choice("rhs", (f"{seed}", f"{seed} + {i}", f"({ety}){i}", "0", f"{seed} ^ {i}"))
    params = [f"int {seed}"]
    items: list[object] = []
    if heap:
        n = p.name("count")
        params.insert(0, f"size_t {n}")
        alloc = p.choice("alloc", ("malloc", "calloc"))
        call = (
            f"malloc({n} * sizeof(*{arr}))" if alloc == "malloc" else f"calloc({n}, sizeof({ety}))"
        )
        items += [f"{ety} *{arr} = {call};", f"size_t {i};", _SLOT]
        items.append(_if(p, f"{arr} == NULL", "return NULL;"))
        bound = n
    else:
        n = p.size("n", 8)
        items += [f"{ety} {arr}[{n}];", f"{p.choice('ity', ('int', 'size_t'))} {i};", _SLOT]
        bound = p.choice("bound", (n, f"sizeof({arr}) / sizeof({arr}[0])"))
    items.append(_loop(p, "fill", i, "0", f"{i} {op} {bound}", [f"{arr}[{i}] = {rhs};"]))
    items.append(_SLOT)
    if heap:
        items.append(f"return {arr};")
        return _Fn(f"{ety} *", params, items)
    items.append(f"return {p.callee('sink')}({arr}, {n});")
    return _Fn("int", params, items)


def _t121_loop(p: _Draw, vul: bool) -> _Fn:
    return _t_loop_bound(p, vul, heap=False)


def _t122_loop(p: _Draw, vul: bool) -> _Fn:
    return _t_loop_bound(p, vul, heap=True)


def _t121_index(p: _Draw, vul: bool) -> _Fn:
    table, idx, v, err = p.name("buf"), p.name("idx"), p.name("val"), p.err()
    size = p.size("n", 8)
    signed = p.flag("signed")
    ity = "int" if signed else p.choice("uty", ("size_t", "unsigned int", "unsigned"))
    items: list[object] = [f"char {table}[{size}];", _SLOT]
    items.append(f"memset({table}, 0, sizeof({table}));")
    lower = signed and p.flag("lowerdecoy", 0.5)
    bound = p.choice("bnd", (size, f"sizeof({table})"))
    if vul:
        if lower:
            items.append(_if(p, f"{idx} < 0", f"return {err};"))
    else:
        cond = f"{idx} >= {bound}" if not signed else f"{idx} < 0 || {idx} >= (int){bound}"
        if signed and bound == size:
            cond = f"{idx} < 0 || {idx} >= {size}"
        items.append(_if(p, cond, f"return {err};"))
    items += [f"{table}[{idx}] = {v};", _SLOT]
    items.append(f"return {p.callee('sink')}({table}, sizeof({table}));")
    return _Fn("int", [f"{ity} {idx}", f"char {v}"], items)


def _t121_sprintf(p: _Draw, vul: bool) -> _Fn:
    msg, host, port, err = p.name("buf"), p.name("host"), p.name("idx"), p.err()
    fmt = p.choice("fmt", ("%s:%d", "user=%s id=%d", "GET /%s?page=%d", "%s (%d)", "[%s] #%d"))
    items: list[object] = [f"char {msg}[{p.size('n', 32)}];", _SLOT]
    items += _null_decoy(p, host, err)
    if vul:
        items.append(f'sprintf({msg}, "{fmt}", {host}, {port});')
    elif p.flag("precheck", 0.3):
        items.append(_if(p, f"strlen({host}) > sizeof({msg}) - 24", f"return {err};"))
        items.append(f'sprintf({msg}, "{fmt}", {host}, {port});')
    else:
        items.append(f'snprintf({msg}, sizeof({msg}), "{fmt}", {host}, {port});')
    items += [_SLOT, f"return {p.callee('sink')}({msg});"]
    return _Fn("int", [f"const char *{host}", f"int {port}"], items)


def _t121_struct_memcpy(p: _Draw, vul: bool) -> _Fn:
    pkt, tmp, err = p.name("pkt"), p.name("buf"), p.err()
    fdata = p.field("data", ("payload", "data", "body", "bytes", "content"))
    flen = p.field("len", ("len", "length", "size", "payload_len", "nbytes"))
    tag = p.tag("pkt")
    items: list[object] = [f"unsigned char {tmp}[{p.size('n', 16)}];", _SLOT]
    items += _null_decoy(p, pkt, err)
    if not vul:
        items.append(_if(p, f"{pkt}->{flen} > sizeof({tmp})", f"return {err};"))
    items += [f"memcpy({tmp}, {pkt}->{fdata}, {pkt}->{flen});", _SLOT]
    items.append(f"return {p.callee('sink')}({tmp}, {pkt}->{flen});")
    return _Fn("int", [f"const struct {tag} *{pkt}"], items)


def _t122_strdup(p: _Draw, vul: bool) -> _Fn:
    s, copy, n = p.name("src"), p.name("buf"), p.name("len")
    size = f"{n}" if vul else f"{n} + 1"
    alloc = f"malloc({size})" if p.flag("nocast", 0.7) else f"(char *)malloc({size})"
    items: list[object] = [f"size_t {n} = strlen({s});", f"char *{copy};", _SLOT]
    items += [f"{copy} = {alloc};", _if(p, f"{copy} == NULL", "return NULL;"), _SLOT]
    if p.flag("usememcpy"):
        items.append(f"memcpy({copy}, {s}, {n} + 1);")
    else:
        items.append(f"strcpy({copy}, {s});")
    items.append(f"return {copy};")
    return _Fn("char *", [f"const char *{s}"], items)


def _t122_append(p: _Draw, vul: bool) -> _Fn:
    sb, data, n, err = p.name("ctx"), p.name("src"), p.name("len"), p.err()
    fbuf = p.field("buf", ("buf", "data", "base", "mem"))
    fused = p.field("used", ("used", "len", "pos", "fill"))
    fcap = p.field("cap", ("cap", "size", "alloc", "capacity"))
    items: list[object] = [_SLOT]
    if not vul:
        if p.flag("grow"):
            nb, need = p.name("grown", "ptr"), p.name("need", "len")
            items.append(f"size_t {need} = {sb}->{fused} + {n};")
            grow = [
                f"char *{nb} = realloc({sb}->{fbuf}, {need});",
                _if(p, f"{nb} == NULL", f"return {err};"),
                f"{sb}->{fbuf} = {nb};",
                f"{sb}->{fcap} = {need};",
            ]
            items.append(_if(p, f"{need} > {sb}->{fcap}", grow))
        else:
            items.append(_if(p, f"{n} > {sb}->{fcap} - {sb}->{fused}", f"return {err};"))
    items += [f"memcpy({sb}->{fbuf} + {sb}->{fused}, {data}, {n});", _SLOT]
    items += [f"{sb}->{fused} += {n};", "return 0;"]
    params = [f"struct {p.tag('sb')} *{sb}", f"const char *{data}", f"size_t {n}"]
    return _Fn("int", params, items)


def _t125_table(p: _Draw, vul: bool) -> _Fn:
    idx, tbl, err = p.name("idx"), p.name("buf"), p.err()
    count = p.randint("count", 3, 9)
    strings = p.flag("strings")
    if strings:
        words = ("ok", "busy", "idle", "closed", "open", "error", "retry", "wait", "done", "gone")
        vals = ", ".join(f'"{words[j]}"' for j in range(count))
        decl = f"static const char *const {tbl}[] = {{{vals}}};"
        ret, errv = "const char *", "NULL"
    else:
        vals = ", ".join(str((j * 7 + p.randint("base", 1, 90)) % 101) for j in range(count))
        decl = f"static const int {tbl}[{count}] = {{{vals}}};"
        ret, errv = "int", err
    signed = p.flag("signed")
    ity = "int" if signed else "unsigned int"
    items: list[object] = [decl, _SLOT]
    if not vul:
        n = f"sizeof({tbl}) / sizeof({tbl}[0])"
        cond = f"{idx} < 0 || (size_t){idx} >= {n}" if signed else f"{idx} >= {n}"
        items.append(_if(p, cond, f"return {errv};"))
    items += [_SLOT, f"return {tbl}[{idx}];"]
    return _Fn(ret, [f"{ity} {idx}"], items)


def _t125_sum(p: _Draw, vul: bool) -> _Fn:
    buf, n, i, acc = p.name("src"), p.name("len"), p.name("i"), p.name("sum")
    ety = p.choice("ety", ("unsigned char", "int", "uint8_t", "short"))
    op = "<=" if vul else "<"
    items: list[object] = [f"unsigned long {acc} = 0;", f"size_t {i};", _SLOT]
    body = p.choice("body", (f"{acc} += {buf}[{i}];", f"{acc} = {acc} * 31 + {buf}[{i}];"))
    items += [_loop(p, "sum", i, "0", f"{i} {op} {n}", [body]), _SLOT, f"return {acc};"]
    return _Fn("unsigned long", [f"const {ety} *{buf}", f"size_t {n}"], items)


def _t125_header(p: _Draw, vul: bool) -> _Fn:
    data, n, out, err = p.name("src"), p.name("len"), p.name("pkt"), p.err()
    nfields = p.randint("nfields", 2, 4)
    names = ("type", "flags", "version", "code", "seq", "kind")
    start = p.randint("fstart", 0, 2)
    fields = [names[(start + j) % len(names)] for j in range(nfields)]
    need = nfields + 2
    items: list[object] = [_SLOT]
    if p.flag("zerodecoy", 0.5):
        items.append(_if(p, f"{n} == 0", f"return {err};"))
    if not vul:
        items.append(_if(p, f"{n} < {need}", f"return {err};"))
    for j, fld in enumerate(fields):
        items.append(f"{out}->{fld} = {data}[{j}];")
    items.append(f"{out}->length = (uint16_t)(({data}[{nfields}] << 8) | {data}[{nfields + 1}]);")
    items += [_SLOT, "return 0;"]
    params = [f"const uint8_t *{data}", f"size_t {n}", f"struct {p.tag('hdr')} *{out}"]
    return _Fn("int", params, items)


def _t125_last(p: _Draw, vul: bool) -> _Fn:
    s, n, last = p.name("src"), p.name("len"), p.name("val")
    items: list[object] = [_SLOT]
    if not vul:
        items.append(_if(p, f"{n} == 0", "return 0;"))
    items += [f"char {last} = {s}[{n} - 1];", _SLOT]
    items.append(
        p.choice("ret", (f"return {last} == '\\n';", f"return {last} == '\\\\' || {last} == ',';"))
    )
    return _Fn("int", [f"const char *{s}", f"size_t {n}"], items)


def _t134_direct(p: _Draw, vul: bool) -> _Fn:
    msg = p.name("src")
    sink = p.choice("sink", ("printf(", "fprintf(stderr, ", "syslog(LOG_ERR, ", "fprintf(log_fp, "))
    items: list[object] = [_SLOT]
    if p.flag("nullret", 0.4):
        items.append(_if(p, f"{msg} == NULL", "return;"))
    items.append(f"{sink}{msg});" if vul else f'{sink}"%s", {msg});')
    items.append(_SLOT)
    return _Fn("void", [f"const char *{msg}"], items)


def _t134_snprintf(p: _Draw, vul: bool) -> _Fn:
    user, buf = p.name("src"), p.name("buf")
    items: list[object] = [f"char {buf}[{p.size('n', 64)}];", _SLOT]
    args = f"{buf}, sizeof({buf}), "
    items.append(f"snprintf({args}{user});" if vul else f'snprintf({args}"%s", {user});')
    items += [_SLOT, f"return {p.choice('out', ('puts', p.callee('sink')))}({buf});"]
    return _Fn("int", [f"const char *{user}"], items)


def _t134_report(p: _Draw, vul: bool) -> _Fn:
    c, reason, buf = p.name("ctx"), p.name("src"), p.name("buf")
    flog = p.field("log", ("log", "log_fp", "errf", "out"))
    prefix = p.choice("pfx", ("error: ", "failed: ", "warning: ", "denied: "))
    items: list[object] = [f"char {buf}[{p.size('n', 64)}];", _SLOT]
    items.append(f'snprintf({buf}, sizeof({buf}), "{prefix}%s\\n", {reason});')
    if vul:
        items.append(f"fprintf({c}->{flog}, {buf});")
    else:
        items.append(
            p.choice("out", (f"fputs({buf}, {c}->{flog});", f'fprintf({c}->{flog}, "%s", {buf});'))
        )
    items.append(_SLOT)
    return _Fn("void", [f"struct {p.tag('c')} *{c}", f"const char *{reason}"], items)


def _t190_calloc(p: _Draw, vul: bool) -> _Fn:
    src, n, size, out = p.name("src"), p.name("count"), p.name("len"), p.name("ptr")
    items: list[object] = [f"void *{out};", _SLOT]
    if not vul:
        items.append(_if(p, f"{size} != 0 && {n} > SIZE_MAX / {size}", "return NULL;"))
    items += [f"{out} = malloc({n} * {size});", _if(p, f"!{out}", "return NULL;"), _SLOT]
    items += [f"memcpy({out}, {src}, {n} * {size});", f"return {out};"]
    return _Fn("void *", [f"const void *{src}", f"size_t {n}", f"size_t {size}"], items)


def _t190_items(p: _Draw, vul: bool) -> _Fn:
    n, arr, i, tag = p.name("count"), p.name("ptr"), p.name("i"), p.tag("item")
    fld = p.field("f", ("id", "index", "key", "slot"))
    nty = p.choice("nty", ("uint32_t", "unsigned int"))
    items: list[object] = [f"struct {tag} *{arr};", f"{nty} {i};", _SLOT]
    if not vul:
        items.append(_if(p, f"{n} > SIZE_MAX / sizeof(struct {tag})", "return NULL;"))
    size = f"{n} * sizeof(struct {tag})"
    items += [f"{arr} = malloc({size});", _if(p, f"{arr} == NULL", "return NULL;"), _SLOT]
    items.append(_loop(p, "init", i, "0", f"{i} < {n}", [f"{arr}[{i}].{fld} = {i};"]))
    items.append(f"return {arr};")
    return _Fn(f"struct {tag} *", [f"{nty} {n}"], items)


def _t190_image(p: _Draw, vul: bool) -> _Fn:
    w, h, buf, total = p.name("width"), p.name("height"), p.name("buf"), p.name("len")
    bpp = p.choice("bpp", ("4", "3", "BYTES_PER_PIXEL", "2"))
    items: list[object] = [f"unsigned char *{buf};", f"int {total};", _SLOT]
    pos = f"{w} <= 0 || {h} <= 0"
    if vul:
        if p.flag("posdecoy", 0.6):
            items.append(_if(p, pos, "return NULL;"))
    else:
        items.append(_if(p, f"{pos} || {w} > INT_MAX / {bpp} / {h}", "return NULL;"))
    items += [f"{total} = {w} * {h} * {bpp};", f"{buf} = malloc({total});", _SLOT]
    items += [_if(p, f"{buf} == NULL", "return NULL;"), f"memset({buf}, 0, {total});"]
    items.append(f"return {buf};")
    return _Fn("unsigned char *", [f"int {w}", f"int {h}"], items)


def _t190_range(p: _Draw, vul: bool) -> _Fn:
    src, total, off, n, out = (p.name(k) for k in ("src", "count", "idx", "len", "buf"))
    err = p.err()
    items: list[object] = [_SLOT]
    if vul:
        items.append(_if(p, f"{off} + {n} > {total}", f"return {err};"))
    else:
        items.append(_if(p, f"{off} > {total} || {n} > {total} - {off}", f"return {err};"))
    items += [_SLOT, f"memcpy({out}, {src} + {off}, {n});", "return 0;"]
    params = [
        f"const unsigned char *{src}",
        f"size_t {total}",
        f"size_t {off}",
        f"size_t {n}",
        f"unsigned char *{out}",
    ]
    return _Fn("int", params, items)


def _t369_average(p: _Draw, vul: bool) -> _Fn:
    vals, n, i, acc = p.name("src"), p.name("count"), p.name("i"), p.name("sum")
    items: list[object] = [f"long {acc} = 0;", f"int {i};", _SLOT]
    items += [_loop(p, "sum", i, "0", f"{i} < {n}", [f"{acc} += {vals}[{i}];"]), _SLOT]
    if vul:
        items.append(f"return (int)({acc} / {n});")
    else:
        style = p.choice("style", ("early", "ternary", "ifelse"))
        if style == "early":
            items += [_if(p, f"{n} == 0", "return 0;"), f"return (int)({acc} / {n});"]
        elif style == "ternary":
            items.append(f"return {n} != 0 ? (int)({acc} / {n}) : 0;")
        else:
            items.append(
                f"if ({n} > 0) "
                + _block([f"return (int)({acc} / {n});"])
                + " else "
                + _block(["return 0;"])
            )
    return _Fn("int", [f"const int *{vals}", f"int {n}"], items)


def _t369_bucket(p: _Draw, vul: bool) -> _Fn:
    t, key, hv = p.name("ctx"), p.name("key"), p.name("val")
    fnb = p.field("nb", ("nbuckets", "size", "nslots", "capacity"))
    fb = p.field("b", ("buckets", "slots", "table", "bins"))
    etag = p.tag("entry")
    items: list[object] = [f"unsigned long {hv} = {p.callee('hash')}({key});", _SLOT]
    if not vul:
        items.append(_if(p, f"{t}->{fnb} == 0", "return NULL;"))
    items += [_SLOT, f"return {t}->{fb}[{hv} % {t}->{fnb}];"]
    return _Fn(f"struct {etag} *", [f"struct {p.tag('t')} *{t}", f"const char *{key}"], items)


def _t369_rate(p: _Draw, vul: bool) -> _Fn:
    nbytes, t1, t2, el = p.name("len"), p.name("t_from"), p.name("t_to"), p.name("sum")
    items: list[object] = [f"unsigned long {el} = {t2} - {t1};", _SLOT]
    if not vul:
        if p.flag("clampone"):
            items.append(_if(p, f"{el} == 0", f"{el} = 1;"))
        else:
            items.append(_if(p, f"{el} == 0", "return 0;"))
    items += [_SLOT, f"return {nbytes} * 1000UL / {el};"]
    params = [f"unsigned long {nbytes}", f"unsigned long {t1}", f"unsigned long {t2}"]
    return _Fn("unsigned long", params, items)


def _t401_early(p: _Draw, vul: bool) -> _Fn:
    fd, n, buf, rc, err = p.name("fd"), p.name("len"), p.name("buf"), p.name("rc"), p.err()
    items: list[object] = [f"char *{buf} = malloc({n});", f"int {rc};", _SLOT]
    items.append(_if(p, f"{buf} == NULL", f"return {err};"))
    call = p.choice(
        "call",
        (
            f"read({fd}, {buf}, {n}) != (ssize_t){n}",
            f"recv({fd}, {buf}, {n}, 0) <= 0",
            f"{p.callee('fill')}({fd}, {buf}, {n}) < 0",
        ),
    )
    fail = [f"return {err};"] if vul else [f"free({buf});", f"return {err};"]
    items += [_SLOT, _if(p, call, fail)]
    items += [f"{rc} = {p.callee('sink')}({buf}, {n});", f"free({buf});", f"return {rc};"]
    return _Fn("int", [f"int {fd}", f"size_t {n}"], items)


def _t401_realloc(p: _Draw, vul: bool) -> _Fn:
    v, extra, err = p.name("ctx"), p.name("len"), p.err()
    fd = p.field("d", ("data", "items", "elems", "vals"))
    fc = p.field("c", ("cap", "capacity", "alloc", "size"))
    ncap = p.name("newcap", "count")
    items: list[object] = [f"size_t {ncap} = {v}->{fc} + {extra};", _SLOT]
    size = f"{ncap} * sizeof(*{v}->{fd})"
    if vul:
        items += [f"{v}->{fd} = realloc({v}->{fd}, {size});"]
        items.append(_if(p, f"{v}->{fd} == NULL", f"return {err};"))
    else:
        tmp = p.name("grown", "ptr")
        items.append(f"void *{tmp} = realloc({v}->{fd}, {size});")
        items += [_if(p, f"{tmp} == NULL", f"return {err};"), f"{v}->{fd} = {tmp};"]
    items += [_SLOT, f"{v}->{fc} = {ncap};", "return 0;"]
    return _Fn("int", [f"struct {p.tag('v')} *{v}", f"size_t {extra}"], items)


def _t401_overwrite(p: _Draw, vul: bool) -> _Fn:
    cfg, val, copy, err = p.name("ctx"), p.name("src"), p.name("buf"), p.err()
    fld = p.field("f", ("name", "value", "path", "label", "host", "title"))
    items: list[object] = [f"char *{copy} = strdup({val});", _SLOT]
    items.append(_if(p, f"{copy} == NULL", f"return {err};"))
    if not vul:
        items.append(f"free({cfg}->{fld});")
    items += [f"{cfg}->{fld} = {copy};", _SLOT, "return 0;"]
    return _Fn("int", [f"struct {p.tag('cfg')} *{cfg}", f"const char *{val}"], items)


def _t415_goto(p: _Draw, vul: bool) -> _Fn:
    path, buf, rc, err = p.name("path"), p.name("buf"), p.name("rc"), p.err()
    size = p.size("n", 64)
    label = p.choice("label", ("out", "done", "cleanup", "exit_path", "end"))
    items: list[object] = [f"int {rc} = {err};", f"char *{buf} = malloc({size});", _SLOT]
    items.append(_if(p, f"{buf} == NULL", f"return {err};"))
    fail = [f"free({buf});", f"goto {label};"]
    if not vul:
        fail = (
            [f"free({buf});", f"{buf} = NULL;", f"goto {label};"]
            if p.flag("nulling")
            else [f"goto {label};"]
        )
    items += [_if(p, f"{p.callee('load')}({path}, {buf}, {size}) < 0", fail), _SLOT]
    items += [f"{rc} = {p.callee('sink')}({buf});", _SLOT]
    items += [f"{label}:\nfree({buf});", f"return {rc};"]
    return _Fn("int", [f"const char *{path}"], items)


def _t415_state(p: _Draw, vul: bool) -> _Fn:
    s = p.name("ctx")
    fb = p.field("b", ("buf", "data", "payload", "scratch"))
    fst = p.field("st", ("state", "status", "mode"))
    code = p.choice("code", ("ST_ERROR", "STATE_FAILED", "-1", "MODE_ABORT"))
    inner = [f"free({s}->{fb});"] if vul else [f"free({s}->{fb});", f"{s}->{fb} = NULL;"]
    items: list[object] = [_SLOT, _if(p, f"{s}->{fst} == {code}", inner), _SLOT]
    items += [f"free({s}->{fb});", f"free({s});"]
    return _Fn("void", [f"struct {p.tag('s')} *{s}"], items)


def _t415_fallthrough(p: _Draw, vul: bool) -> _Fn:
    ctx, n, tmp, rc, err = p.name("ctx"), p.name("len"), p.name("buf"), p.name("rc"), p.err()
    ferr = p.field("e", ("errors", "failures", "nerr"))
    items: list[object] = [f"char *{tmp} = malloc({n});", f"int {rc};", _SLOT]
    items.append(_if(p, f"!{tmp}", f"return {err};"))
    fail = [f"free({tmp});", f"{ctx}->{ferr}++;"]
    if not vul:
        fail.append(f"return {err};")
    items += [_if(p, f"{p.callee('fill')}({ctx}, {tmp}, {n}) < 0", fail), _SLOT]
    items += [f"{rc} = {p.callee('sink')}({ctx}, {tmp}, {n});", f"free({tmp});", f"return {rc};"]
    return _Fn("int", [f"struct {p.tag('c')} *{ctx}", f"size_t {n}"], items)


def _t416_next(p: _Draw, vul: bool) -> _Fn:
    node, nxt, tag = p.name("ptr"), p.name("next", "ptr"), p.tag("node")
    fnext = p.field("n", ("next", "link", "sibling", "succ"))
    items: list[object] = [f"struct {tag} *{nxt};", _SLOT]
    grab, drop = f"{nxt} = {node}->{fnext};", f"free({node});"
    items += [drop, grab] if vul else [grab, drop]
    items += [_SLOT, f"return {nxt};"]
    return _Fn(f"struct {tag} *", [f"struct {tag} *{node}"], items)


def _t416_log(p: _Draw, vul: bool) -> _Fn:
    req = p.name("pkt")
    fid = p.field("id", ("id", "seq", "serial", "handle"))
    log = p.choice("log", ("log_info", "LOG_INFO", "audit_log", "dbg_printf"))
    use = f'{log}("released %d", {req}->{fid});'
    items: list[object] = [_SLOT]
    if p.flag("release"):
        items.append(f"{p.callee('rel')}({req});")
    items += [f"free({req});", use] if vul else [use, f"free({req});"]
    items.append(_SLOT)
    return _Fn("void", [f"struct {p.tag('r')} *{req}"], items)


def _t416_list(p: _Draw, vul: bool) -> _Fn:
    head, n, tag = p.name("ptr"), p.name("cur", "i"), p.tag("node")
    fnext = p.field("n", ("next", "link", "succ"))
    items: list[object] = [f"struct {tag} *{n};", _SLOT]
    if vul:
        items.append(
            f"for ({n} = {head}; {n} != NULL; {n} = {n}->{fnext}) " + _block([f"free({n});"])
        )
    else:
        nxt = p.name("next", "ptr")
        items += [f"struct {tag} *{nxt};", f"{n} = {head};"]
        body = [f"{nxt} = {n}->{fnext};", f"free({n});", f"{n} = {nxt};"]
        items.append(f"while ({n} != NULL) " + _block(body))
    items.append(_SLOT)
    return _Fn("void", [f"struct {tag} *{head}"], items)


def _t476_malloc(p: _Draw, vul: bool) -> _Fn:
    it, tag = p.name("ptr"), p.tag("item")
    nf = p.randint("nfields", 1, 3)
    fields = [("id", "int"), ("flags", "unsigned int"), ("owner", "const char *")][:nf]
    params = [f"{ty} {p.name('arg' + str(j), 'val')}" for j, (_, ty) in enumerate(fields)]
    items: list[object] = [f"struct {tag} *{it} = malloc(sizeof(*{it}));", _SLOT]
    if not vul:
        items.append(_if(p, f"{it} == NULL" if p.flag("eq") else f"!{it}", "return NULL;"))
    for j, (fname, _) in enumerate(fields):
        items.append(f"{it}->{fname} = {p.name('arg' + str(j), 'val')};")
    items += [_SLOT, f"return {it};"]
    return _Fn(f"struct {tag} *", params, items)


def _t476_lookup(p: _Draw, vul: bool) -> _Fn:
    t, key, e, err = p.name("ctx"), p.name("key"), p.name("ptr"), p.err()
    fval = p.field("v", ("value", "refs", "size", "count", "flags"))
    items: list[object] = [
        f"struct {p.tag('e')} *{e} = {p.callee('find')}({t}, {key});",
        _SLOT,
    ]
    if not vul:
        items.append(_if(p, f"{e} == NULL", f"return {err};"))
    items += [_SLOT, f"return {e}->{fval};"]
    return _Fn("int", [f"struct {p.tag('t')} *{t}", f"const char *{key}"], items)


def _t476_getenv(p: _Draw, vul: bool) -> _Fn:
    out, cap, home, n, err = p.name("buf"), p.name("len"), p.name("src"), p.name("count"), p.err()
    var = p.choice("var", ("HOME", "TMPDIR", "USER", "APP_CONFIG", "XDG_CACHE_HOME", "LANG"))
    items: list[object] = [f'const char *{home} = getenv("{var}");', f"size_t {n};", _SLOT]
    if not vul:
        items.append(_if(p, f"{home} == NULL", f"return {err};"))
    items += [f"{n} = strlen({home});", _if(p, f"{n} >= {cap}", f"return {err};")]
    items += [_SLOT, f"memcpy({out}, {home}, {n} + 1);", "return 0;"]
    return _Fn("int", [f"char *{out}", f"size_t {cap}"], items)


def _t476_strchr(p: _Draw, vul: bool) -> _Fn:
    line, sep, kv, err = p.name("src"), p.name("ptr"), p.name("ctx"), p.err()
    ch = p.choice("ch", ("'='", "':'", "' '", "','"))
    fkey = p.field("k", ("key", "name", "field"))
    fval = p.field("v", ("value", "val", "data"))
    items: list[object] = [f"char *{sep} = strchr({line}, {ch});", _SLOT]
    if not vul:
        items.append(_if(p, f"{sep} == NULL", f"return {err};"))
    items += [f"*{sep} = '\\0';", f"{kv}->{fkey} = {line};", f"{kv}->{fval} = {sep} + 1;", _SLOT]
    items.append("return 0;")
    return _Fn("int", [f"char *{line}", f"struct {p.tag('kv')} *{kv}"], items)


_SHELL_CMDS = (
    "ping -c 1 %s",
    "nslookup %s",
    "gzip -d %s",
    "convert %s out.png",
    "ls -l %s",
    "tar -xf %s",
    "lpr %s",
    "host %s",
    "cat %s",
    "whois %s",
    "file %s",
)
_ALLOWED_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def _whitelist_check(p: _Draw, arg: str, err: str) -> list[object]:
    """Reject anything outside a conservative character set (two idiomatic shapes)."""
    if p.flag("strspn"):
        return [_if(p, f"{arg}[strspn({arg}, \"{_ALLOWED_CHARS}\")] != '\\0'", f"return {err};")]
    q = p.name("scan", "ptr")
    cond = f"!isalnum((unsigned char)*{q}) && *{q} != '.' && *{q} != '-'"
    return [
        f"for (const char *{q} = {arg}; *{q} != '\\0'; {q}++) "
        + _block([_if(p, cond, f"return {err};")])
    ]


def _t78_system(p: _Draw, vul: bool) -> _Fn:
    arg, cmd, err = p.name("host"), p.name("cmd"), p.err()
    fmt = p.choice("fmt", _SHELL_CMDS)
    items: list[object] = [f"char {cmd}[{p.size('n', 64)}];", _SLOT]
    items += _null_decoy(p, arg, err)
    if not vul:
        items += _whitelist_check(p, arg, err)
    items += [f'snprintf({cmd}, sizeof({cmd}), "{fmt}", {arg});', _SLOT]
    items.append(f"return system({cmd});")
    return _Fn("int", [f"const char *{arg}"], items)


def _t78_exec(p: _Draw, vul: bool) -> _Fn:
    arg, err = p.name("path"), p.err()
    prog = p.choice("prog", ("gzip", "ls", "tar", "file", "wc", "sha256sum"))
    flag = p.choice("flag", ("-d", "-l", "-b", "-v", "-q"))
    items: list[object] = [_SLOT]
    items += _null_decoy(p, arg, err)
    if vul:
        cmd = p.name("cmd")
        items += [
            f"char {cmd}[{p.size('n', 64)}];",
            f'snprintf({cmd}, sizeof({cmd}), "{prog} {flag} %s", {arg});',
            _SLOT,
            f"return system({cmd});",
        ]
    else:
        pid, st, argv = p.name("pid"), p.name("rc"), p.name("argv", "cmd")
        items.append(f"pid_t {pid} = fork();")
        child = [
            f'char *const {argv}[] = {{"{prog}", "{flag}", (char *){arg}, NULL}};',
            f'execv("/usr/bin/{prog}", {argv});',
            "_exit(127);",
        ]
        items += [
            _if(p, f"{pid} < 0", f"return {err};"),
            _if(p, f"{pid} == 0", child),
            _SLOT,
            f"int {st};",
            _if(p, f"waitpid({pid}, &{st}, 0) < 0", f"return {err};"),
            f"return WEXITSTATUS({st});",
        ]
    return _Fn("int", [f"const char *{arg}"], items)


def _t78_popen(p: _Draw, vul: bool) -> _Fn:
    user, cmd = p.name("host"), p.name("cmd")
    base = p.choice("base", ("finger ", "whois ", "dig +short ", "id ", "groups "))
    items: list[object] = [f'char {cmd}[{p.size("n", 64)}] = "{base}";', _SLOT]
    if not vul:
        items += _whitelist_check(p, user, "NULL")
        items.append(_if(p, f"{user}[0] == '-'", "return NULL;"))
    items += [f"strncat({cmd}, {user}, sizeof({cmd}) - strlen({cmd}) - 1);", _SLOT]
    items.append(f'return popen({cmd}, "r");')
    return _Fn("FILE *", [f"const char *{user}"], items)


def _t787_terminate(p: _Draw, vul: bool) -> _Fn:
    fd, buf, n, err = p.name("fd"), p.name("buf"), p.name("len"), p.err()
    size = f"sizeof({buf})" if vul else f"sizeof({buf}) - 1"
    call = p.choice("call", ("read", "recv"))
    expr = f"read({fd}, {buf}, {size})" if call == "read" else f"recv({fd}, {buf}, {size}, 0)"
    items: list[object] = [f"char {buf}[{p.size('n', 32)}];", f"ssize_t {n};", _SLOT]
    items += [f"{n} = {expr};", _if(p, f"{n} < 0", f"return {err};")]
    items += [f"{buf}[{n}] = '\\0';", _SLOT, f"return {p.callee('sink')}({buf});"]
    return _Fn("int", [f"int {fd}"], items)


def _t787_slot(p: _Draw, vul: bool) -> _Fn:
    d, slot, v, err = p.name("ctx"), p.name("idx"), p.name("val"), p.err()
    freg = p.field("r", ("regs", "slots", "table", "values", "map"))
    bound = p.choice(
        "bnd", (f"sizeof({d}->{freg}) / sizeof({d}->{freg}[0])", "NUM_SLOTS", "MAX_REGS")
    )
    items: list[object] = [_SLOT]
    if not vul:
        items.append(_if(p, f"{slot} >= {bound}", f"return {err};"))
    items += [f"{d}->{freg}[{slot}] = {v};", _SLOT, "return 0;"]
    return _Fn("int", [f"struct {p.tag('d')} *{d}", f"unsigned int {slot}", f"int {v}"], items)


def _t787_histogram(p: _Draw, vul: bool) -> _Fn:
    s, counts, i, c = p.name("src"), p.name("buf"), p.name("i"), p.name("val")
    n = p.name("len")
    idx = c if vul else f"(unsigned char){c}"
    items: list[object] = [f"char {c};", f"size_t {i};", _SLOT]
    body = [f"{c} = {s}[{i}];", f"{counts}[{idx}]++;"]
    items += [_loop(p, "h", i, "0", f"{i} < {n}", body), _SLOT]
    return _Fn("void", [f"const char *{s}", f"size_t {n}", f"unsigned int *{counts}"], items)


def _t787_trim(p: _Draw, vul: bool) -> _Fn:
    s, n = p.name("src"), p.name("len")
    pred = p.choice("pred", ("isspace((unsigned char){x})", "{x} == '\\n' || {x} == '\\r'"))
    test = pred.format(x=f"{s}[{n} - 1]")
    cond = f"({test})" if "||" in test else test
    if not vul:
        cond = f"{n} > 0 && {cond}"
    items: list[object] = [f"size_t {n} = strlen({s});", _SLOT]
    items += [f"while ({cond}) " + _block([f"{s}[--{n}] = '\\0';"]), _SLOT]
    if p.flag("retlen"):
        items.append(f"return {n};")
        return _Fn("size_t", [f"char *{s}"], items)
    return _Fn("void", [f"char *{s}"], items)


_TEMPLATES: dict[str, tuple[tuple[str, Callable[[_Draw, bool], _Fn]], ...]] = {
    "CWE-78": (
        ("system_concat", _t78_system),
        ("system_vs_exec", _t78_exec),
        ("popen_concat", _t78_popen),
    ),
    "CWE-120": (
        ("strcpy_stack", _t120_strcpy),
        ("memcpy_len", _t120_memcpy),
        ("strcat_path", _t120_strcat),
        ("getc_loop", _t120_readline),
    ),
    "CWE-121": (
        ("stack_loop_bound", _t121_loop),
        ("stack_index_write", _t121_index),
        ("sprintf_stack", _t121_sprintf),
        ("stack_struct_memcpy", _t121_struct_memcpy),
    ),
    "CWE-122": (
        ("heap_strlen_alloc", _t122_strdup),
        ("heap_loop_bound", _t122_loop),
        ("heap_append", _t122_append),
    ),
    "CWE-125": (
        ("table_lookup", _t125_table),
        ("sum_loop_bound", _t125_sum),
        ("header_parse", _t125_header),
        ("last_char", _t125_last),
    ),
    "CWE-134": (
        ("printf_family", _t134_direct),
        ("snprintf_format", _t134_snprintf),
        ("report_twice", _t134_report),
    ),
    "CWE-190": (
        ("mul_before_malloc", _t190_calloc),
        ("struct_array_alloc", _t190_items),
        ("image_alloc", _t190_image),
        ("offset_add_check", _t190_range),
    ),
    "CWE-369": (("average", _t369_average), ("hash_bucket", _t369_bucket), ("rate", _t369_rate)),
    "CWE-401": (
        ("early_return", _t401_early),
        ("realloc_assign", _t401_realloc),
        ("overwrite_owned", _t401_overwrite),
    ),
    "CWE-415": (
        ("goto_cleanup", _t415_goto),
        ("state_teardown", _t415_state),
        ("missing_return", _t415_fallthrough),
    ),
    "CWE-416": (
        ("free_then_next", _t416_next),
        ("log_after_free", _t416_log),
        ("list_free_loop", _t416_list),
    ),
    "CWE-476": (
        ("malloc_unchecked", _t476_malloc),
        ("lookup_unchecked", _t476_lookup),
        ("getenv_unchecked", _t476_getenv),
        ("strchr_unchecked", _t476_strchr),
    ),
    "CWE-787": (
        ("read_terminator", _t787_terminate),
        ("slot_write", _t787_slot),
        ("signed_char_index", _t787_histogram),
        ("trim_underflow", _t787_trim),
    ),
}


def _sub_seed(*parts: object) -> int:
    """Stable 64-bit seed from parts (hashlib, because Python's hash() is salted per process)."""
    text = ":".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _template_for(seed: int, cwe: str, i: int) -> tuple[str, Callable[[_Draw, bool], _Fn]]:
    # Shuffle the template list per block of len(templates) pairs: every template is used
    # equally often, but the order is not a fixed rotation a model could key on.
    templates = list(_TEMPLATES[cwe])
    block, pos = divmod(i, len(templates))
    random.Random(_sub_seed(seed, cwe, "block", block)).shuffle(templates)
    return templates[pos]


def _make_pair(seed: int, cwe: str, i: int) -> list[FunctionRecord]:
    name, template = _template_for(seed, cwe, i)
    draw = _Draw(random.Random(_sub_seed(seed, cwe, i)))
    group = f"synthetic:{cwe}:{i:05d}"
    records = []
    for label in (1, 0):  # vulnerable first: the fixed variant reuses its memoised draws
        code = _render(draw, template(draw, bool(label)))
        records.append(
            FunctionRecord(
                id=f"{group}:{'vul' if label else 'fix'}",
                func=code,
                label=label,
                source="synthetic",
                project="synthetic",
                cwe=cwe,
                idx=None,
                group=group,
                weight=1.0,
                meta={"template": name, "pair": i},
            )
        )
    return records


def generate_synthetic(
    pairs_per_cwe: int = 40, seed: int = 42, cwes: Sequence[str] | None = None
) -> list[FunctionRecord]:
    """Deterministic vulnerable/fixed C function pairs: 2 * pairs_per_cwe records per CWE."""
    if isinstance(pairs_per_cwe, bool) or not isinstance(pairs_per_cwe, int):
        raise TypeError(f"pairs_per_cwe must be an int, got {type(pairs_per_cwe).__name__}")
    if pairs_per_cwe < 1:
        raise ValueError(f"pairs_per_cwe must be >= 1, got {pairs_per_cwe}")
    if isinstance(cwes, str):
        cwes = [cwes]  # a bare string would otherwise be iterated character by character
    selected = list(SYNTHETIC_CWES) if cwes is None else [str(c).strip().upper() for c in cwes]
    for cwe in selected:
        if cwe not in _TEMPLATES:
            raise ValueError(
                f"unsupported CWE {cwe!r} for the synthetic collector; "
                f"supported: {', '.join(SYNTHETIC_CWES)}"
            )
    duplicates = sorted({c for c in selected if selected.count(c) > 1})
    if duplicates:
        raise ValueError(f"duplicate CWE(s) in cwes: {', '.join(duplicates)}")
    records: list[FunctionRecord] = []
    for cwe in selected:
        for i in range(pairs_per_cwe):
            records.extend(_make_pair(seed, cwe, i))
    return records
