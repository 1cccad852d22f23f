"""The restricted, bounded language of ``!!python/object/apply:eval`` in config files.

The published configs compute list values such as ``[int(x * 0.1 * 512) for x in range(5, 21)]``.
Instead of Python's ``eval`` (arbitrary code), :func:`safe_eval_expression` interprets a small
language: int / float / str / bool literals, lists and tuples, ``+ - * / // % **``, unary ``-``,
``range`` / ``int`` / ``float`` / ``round`` / ``list`` calls and single-loop list comprehensions.

Every evaluation is bounded, so a config can neither exhaust memory nor spin the CPU:

- ``MAX_SEQUENCE_LENGTH``: items of any list, tuple, range or string built or iterated;
- ``MAX_INT_BITS``: bit length of any integer (a power is refused before it is computed);
- ``MAX_EVAL_STEPS``: expression nodes evaluated plus items copied by ``+``, ``*`` and ``list``,
  in the whole expression (bounds nested comprehensions);
- ``MAX_NESTING``: depth of nested sub-expressions.
"""

from __future__ import annotations

import ast
from typing import Any, Callable

MAX_SEQUENCE_LENGTH = 10**6
MAX_INT_BITS = 64
MAX_EVAL_STEPS = 2 * 10**6
MAX_NESTING = 100

_SEQUENCES = (str, list, tuple)
_NUMBER_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Pow: lambda a, b: a**b,
    ast.Mod: lambda a, b: a % b,
}


class ExpressionError(ValueError):
    """An expression that cannot be evaluated: a Python error (``1 / 0``) or a value or amount
    of work past one of the module's bounds."""


class UnsupportedExpression(ExpressionError):
    """An expression outside the restricted language (``yaml.unsafe_load`` may still read it)."""


def safe_eval_expression(expression: str) -> Any:
    """The value of ``expression`` in the restricted language, within the module's bounds.

    >>> safe_eval_expression("[int(x * 0.1 * 512) for x in range(5, 8)]")
    [256, 307, 358]
    """
    shown = repr(expression if len(expression) <= 80 else expression[:77] + "...")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"{shown} is not a Python expression: {e.msg}") from e
    except RecursionError as e:
        raise ExpressionError(f"{shown} is nested too deeply to parse") from e
    try:
        return _Evaluator().evaluate(tree.body, {}, depth=0)
    except UnsupportedExpression as e:
        raise UnsupportedExpression(f"{shown}: {e}") from e
    except ExpressionError as e:
        raise ExpressionError(f"{shown}: {e}") from e
    except (ArithmeticError, TypeError, ValueError) as e:
        raise ExpressionError(f"{shown}: {type(e).__name__}: {e}") from e


def _too_large(what: str, bound: str) -> ExpressionError:
    return ExpressionError(f"{what} is over the bound of {bound}")


def _check_length(length: int, what: str) -> None:
    if length > MAX_SEQUENCE_LENGTH:
        raise _too_large(f"{what} of {length} items", f"{MAX_SEQUENCE_LENGTH} items")


def _checked(value: Any) -> Any:
    """``value`` if it is a config value within the bounds."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _too_large(f"an integer of {value.bit_length()} bits", f"{MAX_INT_BITS} bits")
    if isinstance(value, range):
        try:
            _check_length(len(value), "a range")
        except OverflowError as e:  # len() of a range longer than sys.maxsize
            raise _too_large(f"{value!r}", f"{MAX_SEQUENCE_LENGTH} items") from e
    elif isinstance(value, _SEQUENCES):
        _check_length(len(value), f"a {type(value).__name__}")
    elif not isinstance(value, (int, float)):
        raise UnsupportedExpression(f"a value of type {type(value).__name__} is not a config value")
    return value


def _check_power(base: int | float, exponent: int | float) -> None:
    """Refuse an integer power whose result would be past ``MAX_INT_BITS``, before computing it."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise _too_large(f"{base} ** {exponent}", f"{MAX_INT_BITS} bits")


def _round(number: int | float, ndigits: int | None = None) -> int | float:
    # round(int, -n) computes 10 ** n
    if ndigits is not None and abs(ndigits) > MAX_INT_BITS:
        raise _too_large(f"round(..., {ndigits})", f"{MAX_INT_BITS} digits")
    return round(number, ndigits)


_CALLS: dict[str, Callable[..., Any]] = {
    "range": range,
    "int": int,
    "float": float,
    "round": _round,
    "list": list,
}


class _Evaluator:
    """Evaluates one expression tree, counting its steps against ``MAX_EVAL_STEPS``."""

    def __init__(self) -> None:
        self.steps = 0

    def spend(self, steps: int) -> None:
        self.steps += steps
        if self.steps > MAX_EVAL_STEPS:
            raise _too_large("the evaluation", f"{MAX_EVAL_STEPS} steps")

    def evaluate(self, node: ast.AST, env: dict[str, Any], depth: int) -> Any:
        if depth > MAX_NESTING:
            raise _too_large("the nesting of sub-expressions", f"{MAX_NESTING} levels")
        self.spend(1)
        return _checked(self._value(node, env, depth + 1))

    def _value(self, node: ast.AST, env: dict[str, Any], depth: int) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.evaluate(e, env, depth) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _NUMBER_OPS:
            left = self.evaluate(node.left, env, depth)
            return self._binary(node.op, left, self.evaluate(node.right, env, depth))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self.evaluate(node.operand, env, depth)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            if node.func.id in _CALLS:
                args = [self.evaluate(a, env, depth) for a in node.args]
                return self._call(node.func.id, args)
        if isinstance(node, ast.ListComp) and len(node.generators) == 1:
            gen = node.generators[0]
            if isinstance(gen.target, ast.Name) and not gen.ifs and not gen.is_async:
                values = self.evaluate(gen.iter, env, depth)
                name = gen.target.id
                return [self.evaluate(node.elt, {**env, name: v}, depth) for v in values]
        raise UnsupportedExpression(f"unsupported expression {ast.unparse(node)!r}")

    def _binary(self, op: ast.operator, left: Any, right: Any) -> Any:
        """Arithmetic on numbers; ``+`` of two sequences of one type, ``*`` of one and an int."""
        if _is_number(left) and _is_number(right):
            if isinstance(op, ast.Pow):
                _check_power(left, right)
            return _NUMBER_OPS[type(op)](left, right)
        if isinstance(op, ast.Add) and isinstance(left, _SEQUENCES) and type(left) is type(right):
            self._copy(len(left) + len(right), f"a {type(left).__name__}")
            return left + right
        if isinstance(op, ast.Mult):
            sequence, count = (right, left) if isinstance(right, _SEQUENCES) else (left, right)
            if isinstance(sequence, _SEQUENCES) and isinstance(count, int):
                self._copy(len(sequence) * max(count, 0), f"a {type(sequence).__name__}")
                return sequence * count
        raise UnsupportedExpression(
            f"unsupported operands for {type(op).__name__}: {type(left).__name__} and "
            f"{type(right).__name__}"
        )

    def _call(self, name: str, args: list[Any]) -> Any:
        if name == "list" and len(args) == 1:
            self._copy(len(args[0]) if isinstance(args[0], (range, *_SEQUENCES)) else 0, "a list")
        return _CALLS[name](*args)

    def _copy(self, length: int, what: str) -> None:
        """Refuse to build a sequence of ``length`` items past the bounds, before building it."""
        _check_length(length, what)
        self.spend(length)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))
