"""What one recipient's render may spend, enforced inside the sandbox whatever the template does.

A ``Budget`` holds one render's limits: wall-clock seconds, loop steps and
calls, the characters (or items) its values may hold, and the output it may
produce. ``content.rendering`` makes the budget of the render in progress the
*active* one; the sandbox's hooks below then

- count every loop iteration and call as a step (a filter or string method
  one more per KB of its string), and look at the clock every
  ``CLOCK_EVERY`` steps and at each call on a string of 1 KB or more, so an
  empty nested loop ends on time (one call on the largest string allowed can
  still overrun the budget by a fraction of a second);
- refuse, *before* computing it, any value larger than ``MAX_VALUE``
  (characters of a string, items of a sequence, bits of an integer): string
  and sequence products, powers, ``%``/``format``/``str.format`` widths,
  ``center``/``indent``/``wordwrap``/``replace``/``join``, ``ljust``,
  ``zfill``, ``expandtabs``, ``translate`` …, and printing or joining
  anything whose text would be that long;
- charge every value made to ``MAX_WORK``, so many values just under the cap
  cannot add up.

A limit that is hit raises ``RenderError`` naming it. When the clock runs out
while this thread had under half the CPU time the wall clock shows (the
machine, not the template, was slow), the error says it may be retried.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from string import Formatter

from jinja2 import Undefined
from jinja2.utils import Namespace

MAX_OUTPUT_BYTES = 512 * 1024  # characters of one rendered email
TIME_BUDGET_SECONDS = 2.0
MAX_VALUE = MAX_OUTPUT_BYTES  # the longest string, sequence (items) a template may make: no more than it may print
MAX_INT_BITS = 1 << 16  # about 20,000 decimal digits
MAX_WORK = 64 * MAX_OUTPUT_BYTES  # characters and items all the values of one render may hold together
MAX_STEPS = 1_000_000  # loop iterations and calls in one render
CLOCK_EVERY = 512  # steps between looks at the clock
MAX_WRAPPED_LINES = 20_000

_KB = MAX_OUTPUT_BYTES // 1024


class _Active(threading.local):
    budget: Budget | None = None


_active = _Active()
# printf-style conversions: %[(key)][flags][width][.precision][length]type
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
_DIGITS = re.compile(r"\d+")
# What always prints short or is already measured: strings, numbers (integers are capped at MAX_INT_BITS), nothing.
_SHORT = (str, int, float, Undefined, type(None))
_PAD_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


class RenderError(Exception):
    """One recipient's email could not be rendered; the run records it and goes on.

    ``retryable`` is true when the time budget ran out because the machine was
    slow (this thread got under half the CPU time of the wall clock), not the
    template: the render may be tried once more.
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class Budget:
    """What one recipient's render may still spend: output characters, seconds, steps and work."""

    __slots__ = ("remaining", "seconds", "started", "deadline", "cpu_started", "steps", "work")

    def __init__(self, max_bytes: int = MAX_OUTPUT_BYTES, seconds: float = TIME_BUDGET_SECONDS):
        self.remaining = max_bytes
        self.seconds = seconds
        self.started = time.perf_counter()
        self.deadline = self.started + seconds
        self.cpu_started = time.thread_time()
        self.steps = 0
        self.work = 0

    def tick(self, steps: int = 1) -> None:
        """Count loop iterations or calls; RenderError past ``MAX_STEPS`` or the deadline."""
        before = self.steps
        self.steps += steps
        if self.steps > MAX_STEPS:
            raise RenderError(f"the template takes more than {MAX_STEPS:,} loop steps and calls")
        if before // CLOCK_EVERY != self.steps // CLOCK_EVERY:
            self.check_clock()

    def check_clock(self) -> None:
        """RenderError once the deadline has passed (retryable when the machine, not the template, was slow)."""
        now = time.perf_counter()
        if now > self.deadline:
            cpu = time.thread_time() - self.cpu_started
            lost = now - self.started - cpu  # wall time this thread did not run
            slow_machine = lost > max(cpu, 0.05)
            reason = f" (the machine was busy: this render had the CPU for {cpu:.2f} s)" if slow_machine else ""
            raise RenderError(f"rendering took longer than {self.seconds:g} s{reason}", retryable=slow_machine)

    def charge(self, size: int) -> None:
        """Count a value of ``size`` characters or items against ``MAX_WORK``."""
        self.work += size
        if self.work > MAX_WORK:
            raise RenderError(f"the template makes more than {MAX_WORK // 1024 // 1024} MB of values")

    def guard(self, iterable: Iterable) -> Iterator:
        """``iterable`` with one step counted per item."""
        for item in iterable:
            self.tick()
            yield item


class active:  # noqa: N801 (used as a context manager, like a function)
    """Make ``budget`` the one the sandbox's hooks charge, for the duration of a ``with`` block."""

    __slots__ = ("budget", "previous")

    def __init__(self, budget: Budget):
        self.budget = budget

    def __enter__(self) -> Budget:
        self.previous = _active.budget
        _active.budget = self.budget
        return self.budget

    def __exit__(self, *exc) -> None:
        _active.budget = self.previous


def current() -> Budget | None:
    """The budget of the render in progress in this thread, if any."""
    return _active.budget


def tick(value=None) -> None:
    """A call or filter on ``value``: one step, and one more per KB of a string (work grows with its length)."""
    budget = _active.budget
    if budget is not None:
        if isinstance(value, (str, bytes)) and len(value) >= 1024:
            budget.tick(1 + (len(value) >> 10))
            budget.check_clock()  # one call on a long string can take a while
        else:
            budget.tick()


def guard(iterable: Iterable) -> Iterable:
    """``iterable`` counted item by item against the active budget (as it is when none is active)."""
    budget = current()
    return iterable if budget is None else budget.guard(iterable)


def made(size: int, what: str) -> None:
    """Refuse a value of ``size`` characters or items larger than ``MAX_VALUE``, before it is made; charge it."""
    if size > MAX_VALUE:
        raise RenderError(f"{what} would be {size:,} characters or items long; an email may have {_KB} KB")
    budget = _active.budget
    if budget is not None:
        budget.work += size
        if budget.work > MAX_WORK:
            budget.charge(0)  # raises, naming the limit


def result(value, what: str):
    """``value`` (already made) counted like ``made``; iterators come back counted item by item."""
    if type(value) is str or isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        made(len(value), what)
    elif isinstance(value, Iterator):
        return guard(value)
    return value


def printed_size(value, limit: int = MAX_VALUE) -> int:
    """An upper bound of ``len(str(value))``, found without making the string; stops counting past ``limit``.

    Containers are walked (each element is a step of the active budget); any
    other object is taken to print in at most 128 characters.
    """
    if isinstance(value, str):
        return len(value)
    total = 0
    stack = [value]
    budget = current()
    while stack and total <= limit:
        item = stack.pop()
        if budget is not None:
            budget.tick()
        if isinstance(item, (str, bytes)):
            total += len(item) + 3
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            total += 24
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, range):
            total += 40
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(islice(item, limit))
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(islice(item.keys(), limit))
            stack.extend(islice(item.values(), limit))
        elif isinstance(item, Namespace):
            total += 12
            stack.append(item._Namespace__attrs)  # noqa: SLF001 (what its repr prints)
        else:
            total += 128
    return total


def printed(value, what: str) -> None:
    """Refuse ``value`` if its text would be larger than ``MAX_VALUE``, before it is made."""
    if not isinstance(value, _SHORT):
        made(printed_size(value), what)


def check_percent(template: str, args) -> None:
    """Refuse a printf-style ``template % args`` whose widths or text would be too large."""
    size = len(template)
    for match in _PERCENT_SPEC.finditer(template):
        for number in match.group(1, 2):
            if number == "*":
                raise RenderError("'*' widths in % formatting are not allowed in templates")
            if number is not None:
                size += int(number)
    values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
    size += sum(printed_size(value) for value in values)
    made(size, "the formatted text")


def check_format(template: str, args, kwargs) -> None:
    """Refuse a ``str.format`` whose widths or text would be too large (PEP 3101 format specs)."""
    size = len(template)
    try:
        fields = list(Formatter().parse(template))
    except ValueError:
        fields = []  # str.format raises its own error
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise RenderError("nested fields in format specifications are not allowed in templates")
        size += sum(int(digits) for digits in _DIGITS.findall(spec or ""))
    size += sum(printed_size(value) for value in (*args, *kwargs.values()))
    made(size, "the formatted text")


def check_joined(separator: str, items: Iterable) -> list:
    """The items of a join, listed; refused when there are too many or the joined text would be too large."""
    listed = list(islice(guard(items), MAX_VALUE + 1))
    if len(listed) > MAX_VALUE:
        raise RenderError(f"joining more than {MAX_VALUE:,} items")
    size = len(separator) * max(len(listed) - 1, 0) + sum(printed_size(item) for item in listed)
    made(size, "the joined text")
    return listed


def check_product(left, right) -> None:
    """Refuse ``left * right`` when it makes a string, sequence or integer that is too large."""
    if isinstance(left, int) and not isinstance(right, int):
        left, right = right, left
    if isinstance(right, int) and isinstance(left, (str, bytes, list, tuple)):
        made(len(left) * max(right, 0), "the product")
    elif isinstance(left, int) and isinstance(right, int):
        _int_bits(left.bit_length() + right.bit_length())


def check_sum(left, right) -> None:
    """Refuse ``left + right`` of strings or sequences when the result is too large."""
    if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
        made(len(left) + len(right), "the sum")


def check_power(base, exponent) -> None:
    """Refuse an integer power whose result would have more than ``MAX_INT_BITS`` bits."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        _int_bits(base.bit_length() * exponent)


def check_str_method(target, name: str, args, kwargs) -> list | None:
    """Refuse a call of a string method whose result would be too large; the listed items of a ``join``."""
    if name in _PAD_METHODS:
        width = args[0] if args else kwargs.get("width", 0)
        if isinstance(width, int):
            made(max(len(target), width), f"{name}()")
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            made(len(target) + target.count("\t" if isinstance(target, str) else b"\t") * tabsize, "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        check_replace(target, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
    elif name == "translate" and args:
        table = args[0]
        if not isinstance(table, (dict, bytes)):
            raise RenderError("translate() takes a table made with maketrans() in templates")
        longest = max((printed_size(v) for v in table.values()), default=1) if isinstance(table, dict) else 1
        made(len(target) * max(longest, 1), "translate()")
    elif name == "join" and args:
        return check_joined(target, args[0])
    elif name in ("format", "format_map"):
        if name == "format_map":
            kwargs = args[0] if args and isinstance(args[0], dict) else {}
            args = ()
        check_format(target, args, kwargs)
    return None


def check_replace(text, old, new, count=-1) -> None:
    """Refuse ``text.replace(old, new, count)`` when the result would be too large."""
    if not isinstance(text, (str, bytes)) or not isinstance(old, type(text)) or not isinstance(new, type(text)):
        return
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    made(len(text) + times * max(len(new) - len(old), 0), "replace()")


def _int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        digits, allowed = bits * 3 // 10, MAX_INT_BITS * 3 // 10
        raise RenderError(f"the number would have about {digits:,} digits; templates may use {allowed:,}")


# Filters that never turn their value into text: their input is not measured as printed text.
_NOT_PRINTING = frozenset(
    {
        "abs", "attr", "batch", "bool", "count", "d", "default", "dictsort", "fallback", "first", "float",
        "groupby", "int", "items", "last", "length", "list", "map", "max", "min", "random", "reject",
        "rejectattr", "reverse", "round", "select", "selectattr", "slice", "sort", "sum", "track", "unique",
    }
)  # fmt: skip


def bounded_filter(name: str, func):
    """``func`` (a Jinja filter) with its result's size checked before it is made, where its arguments tell it.

    The wrapper takes the render context, which also keeps Jinja from calling
    the filter while it compiles a template (constant folding).
    """
    from jinja2.utils import _PassArg, pass_context

    kind = _PassArg.from_obj(func)
    prints, prechecked = name not in _NOT_PRINTING, name in _PRECHECKED

    @pass_context
    def bounded(context, value, *args, **kwargs):
        budget = _active.budget
        if type(value) is str:  # the usual case (a merge field): work grows with its length
            if budget is not None:
                budget.tick(1 + (len(value) >> 10))
                if len(value) >= 1024:  # one call on a long string can take a while: look at the clock now
                    budget.check_clock()
        else:
            if budget is not None:
                budget.tick()
            if prints:
                printed(value, f"the value given to |{name}")
        if prints and (args or kwargs):
            for given in (*args, *kwargs.values()):
                if type(given) is not str:
                    printed(given, f"the value given to |{name}")
        if prechecked:
            value = _filter_precheck(name, value, args, kwargs)
        if kind is None:
            out = func(value, *args, **kwargs)
        elif kind is _PassArg.context:
            out = func(context, value, *args, **kwargs)
        elif kind is _PassArg.eval_context:
            out = func(context.eval_ctx, value, *args, **kwargs)
        else:
            out = func(context.environment, value, *args, **kwargs)
        if type(out) is str and len(out) <= MAX_VALUE and budget is not None:
            budget.work += len(out)
            if budget.work <= MAX_WORK:
                return out
        return result(out, f"the result of |{name}")

    bounded.__name__ = bounded.__qualname__ = getattr(func, "__name__", name)
    return bounded


_PRECHECKED = frozenset({"center", "indent", "wordwrap", "replace", "format", "join", "batch", "truncate"})


def _arg(args, kwargs, index: int, key: str, default):
    return args[index] if len(args) > index else kwargs.get(key, default)


def _filter_precheck(name: str, value, args, kwargs):
    """Refuse what the filter would make too large; the value to give it (a join's items, listed)."""
    if name == "center":
        width = _arg(args, kwargs, 0, "width", 80)
        if isinstance(width, int):
            made(max(printed_size(value), width), "|center")
    elif name == "indent":
        width = _arg(args, kwargs, 0, "width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        text = str(value)
        made(len(text) + pad * (text.count("\n") + 1), "|indent")
    elif name == "wordwrap":
        width = _arg(args, kwargs, 0, "width", 79)
        wrapstring = _arg(args, kwargs, 2, "wrapstring", None) or "\n"
        text = str(value)
        if isinstance(width, int):
            lines = len(text) // max(width, 1) + 1
            if lines > MAX_WRAPPED_LINES:  # textwrap takes microseconds a line, and cannot be interrupted
                raise RenderError(f"|wordwrap would make more than {MAX_WRAPPED_LINES:,} lines")
            made(len(text) + lines * printed_size(wrapstring), "|wordwrap")
    elif name == "replace":
        count = _arg(args, kwargs, 2, "count", None)
        check_replace(str(value), str(_arg(args, kwargs, 0, "old", "")), str(_arg(args, kwargs, 1, "new", "")),
                      -1 if count is None else count)  # fmt: skip
    elif name == "format":
        check_percent(str(value), kwargs or tuple(args))
    elif name == "join":
        return check_joined(str(_arg(args, kwargs, 0, "d", "")), value)
    elif name == "batch":
        if _arg(args, kwargs, 1, "fill_with", None) is not None:
            made(_arg(args, kwargs, 0, "linecount", 0), "|batch")
    elif name == "truncate":
        made(printed_size(value) + printed_size(_arg(args, kwargs, 2, "end", "...")), "|truncate")
    return value
