"""The CEL subset's syntax: lexer, AST and recursive-descent parser with the size and depth caps.
Errors are ``CelError`` with a column. The checker and code generator are in cel.py. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_EXPR_CHARS", "MAX_NODES", "CelError", "Node", "parse"]

MAX_EXPR_CHARS = 4096
MAX_NODES = 400
MAX_DEPTH = 48


class CelError(ValueError):
    """One problem in one expression: a one-line reason with the column (1-based) where it is."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --- lexer -------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<double>(?:[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?)|(?:[0-9]+[eE][+-]?[0-9]+))
  | (?P<hex>0[xX][0-9a-fA-F]+)
  | (?P<int>[0-9]+)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%<>!?:.,()\[\]{}])
    """,
    re.VERBOSE,
)
_RESERVED = {
    "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
    "package", "namespace", "return", "var", "void", "while",
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v", "?": "?", "`": "`"}


@dataclass(slots=True)
class _Tok:
    kind: str  # int, double, string, ident, op, end
    text: str
    col: int
    value: Any = None


def _unescape(body: str, col: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "uU" or nxt == "x":
            width = {"u": 4, "U": 8, "x": 2}[nxt]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise CelError(f"bad escape \\{nxt} in string at column {col}")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise CelError(f"unknown escape \\{nxt} in string at column {col}")
    return "".join(out)


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CelError(f"unexpected character {text[pos]!r} at column {pos + 1}")
        kind = m.lastgroup or ""
        raw = m.group()
        col = pos + 1
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "int" or kind == "hex":
            # CEL allows an unsigned suffix 'u'; we have one integer type.
            if pos < len(text) and text[pos] in "uU":
                pos += 1
            toks.append(_Tok("int", raw, col, int(raw, 0)))
        elif kind == "double":
            toks.append(_Tok("double", raw, col, float(raw)))
        elif kind == "string":
            toks.append(_Tok("string", raw, col, _unescape(raw[1:-1], col)))
        elif kind == "ident":
            if raw in _RESERVED:
                raise CelError(f"'{raw}' is a reserved word at column {col}")
            toks.append(_Tok("ident", raw, col))
        else:
            toks.append(_Tok("op", raw, col))
    toks.append(_Tok("end", "", len(text) + 1))
    return toks


# --- AST ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    col: int


@dataclass(slots=True)
class Lit(Node):
    value: Any


@dataclass(slots=True)
class Ident(Node):
    name: str


@dataclass(slots=True)
class Select(Node):
    operand: Node
    field: str


@dataclass(slots=True)
class Index(Node):
    operand: Node
    index: Node


@dataclass(slots=True)
class Call(Node):
    fn: str
    target: Node | None
    args: list[Node]


@dataclass(slots=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(slots=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(slots=True)
class Cond(Node):
    test: Node
    then: Node
    other: Node


@dataclass(slots=True)
class ListLit(Node):
    items: list[Node]


# --- parser ------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _lex(text)
        self.i = 0
        self.nodes = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, *ops: str) -> bool:
        tok = self.toks[self.i]
        return tok.kind == "op" and tok.text in ops

    def expect(self, op: str) -> _Tok:
        tok = self.next()
        if tok.kind != "op" or tok.text != op:
            raise CelError(f"expected '{op}' but found {_describe(tok)} at column {tok.col}")
        return tok

    def count(self, node: Node) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise CelError(f"expression is too large (more than {MAX_NODES} nodes)")
        return node

    def parse(self) -> Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise CelError(f"unexpected {_describe(tok)} at column {tok.col}")
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CelError(f"expression is nested too deeply (more than {MAX_DEPTH} levels)")
        node = self.or_()
        if self.at("?"):
            col = self.next().col
            then = self.or_()
            self.expect(":")
            other = self.expr()
            node = self.count(Cond(col, node, then, other))
        self.depth -= 1
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.at("||"):
            col = self.next().col
            node = self.count(Binary(col, "||", node, self.and_()))
        return node

    def and_(self) -> Node:
        node = self.rel()
        while self.at("&&"):
            col = self.next().col
            node = self.count(Binary(col, "&&", node, self.rel()))
        return node

    def rel(self) -> Node:
        node = self.add()
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in ("==", "!=", "<", "<=", ">", ">="):
                self.next()
                node = self.count(Binary(tok.col, tok.text, node, self.add()))
            elif tok.kind == "ident" and tok.text == "in":
                self.next()
                node = self.count(Binary(tok.col, "in", node, self.add()))
            else:
                return node

    def add(self) -> Node:
        node = self.mul()
        while self.at("+", "-"):
            tok = self.next()
            node = self.count(Binary(tok.col, tok.text, node, self.mul()))
        return node

    def mul(self) -> Node:
        node = self.unary()
        while self.at("*", "/", "%"):
            tok = self.next()
            node = self.count(Binary(tok.col, tok.text, node, self.unary()))
        return node

    def unary(self) -> Node:
        # A loop, not recursion: a run of 4000 '!' or '-' must be an error, not a RecursionError.
        ops: list[_Tok] = []
        while self.at("!", "-"):
            ops.append(self.next())
            if len(ops) > MAX_DEPTH:
                raise CelError(f"expression is nested too deeply (more than {MAX_DEPTH} unary operators)")
        operand = self.member()
        for tok in reversed(ops):
            if tok.text == "-" and isinstance(operand, Lit) and type(operand.value) in (int, float):
                operand.value = -operand.value
                operand.col = tok.col
                continue
            operand = self.count(Unary(tok.col, tok.text, operand))
        return operand

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.next()
                tok = self.next()
                if tok.kind != "ident":
                    raise CelError(f"expected a field name after '.' at column {tok.col}")
                if self.at("("):
                    args = self.call_args()
                    node = self.count(Call(tok.col, tok.text, node, args))
                else:
                    node = self.count(Select(tok.col, node, tok.text))
            elif self.at("["):
                col = self.next().col
                index = self.expr()
                self.expect("]")
                node = self.count(Index(col, node, index))
            else:
                return node

    def call_args(self) -> list[Node]:
        self.expect("(")
        args: list[Node] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.next()
                args.append(self.expr())
        self.expect(")")
        return args

    def primary(self) -> Node:
        tok = self.next()
        if tok.kind in ("int", "double", "string"):
            return self.count(Lit(tok.col, tok.value))
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return self.count(Lit(tok.col, tok.text == "true"))
            if tok.text == "null":
                return self.count(Lit(tok.col, None))
            if tok.text == "in":
                raise CelError(f"unexpected 'in' at column {tok.col}")
            if self.at("("):
                return self.count(Call(tok.col, tok.text, None, self.call_args()))
            return self.count(Ident(tok.col, tok.text))
        if tok.kind == "op" and tok.text == "(":
            node = self.expr()
            self.expect(")")
            return node
        if tok.kind == "op" and tok.text == "[":
            items: list[Node] = []
            if not self.at("]"):
                items.append(self.expr())
                while self.at(","):
                    self.next()
                    if self.at("]"):
                        break
                    items.append(self.expr())
            self.expect("]")
            return self.count(ListLit(tok.col, items))
        if tok.kind == "op" and tok.text == "{":
            raise CelError(f"map literals are not supported at column {tok.col}")
        raise CelError(f"unexpected {_describe(tok)} at column {tok.col}")


def _describe(tok: _Tok) -> str:
    return "end of expression" if tok.kind == "end" else f"'{tok.text}'"


def parse(text: str) -> Node:
    """The AST of ``text``; raises CelError on the first syntax error."""
    if len(text) > MAX_EXPR_CHARS:
        raise CelError(f"expression is longer than {MAX_EXPR_CHARS} characters")
    if not text.strip():
        raise CelError("expression is empty")
    return _Parser(text).parse()
